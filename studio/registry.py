"""The pipeline registry, filled from the ``studio.pipelines`` entry-point group, and the one place that
decides what can run here: the CLI (``--backend``, ``studio pipelines``, ``studio doctor``) and the web
demo (its backend menus and settings) all ask this module. No pipeline name is written anywhere in
studio: the embedded default registers itself like any third-party plugin.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from importlib.metadata import entry_points
from pathlib import Path

from studio.errors import StudioError
from studio.pipeline import TASKS, check_pipeline_class

logger = logging.getLogger(__name__)
GROUP = "studio.pipelines"


@functools.cache
def _load_all() -> dict[str, type]:
    found: dict[str, type] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plug-in must not take the CLI down
            logger.warning("pipeline '%s' could not be loaded: %s", ep.name, exc)
            continue
        problems = check_pipeline_class(cls)
        if problems:
            logger.warning("pipeline '%s' (%s) does not follow the contract: %s", ep.name, ep.value, "; ".join(problems))
            continue
        if cls.name != ep.name:
            logger.warning("pipeline entry point '%s' names a class called '%s'; using '%s'", ep.name, cls.name, ep.name)
        found[ep.name] = cls
    return found


def registered_pipelines(task: str | None = None) -> dict[str, type]:
    """name -> pipeline class for every entry point that follows the contract (broken ones are logged
    and skipped), optionally only those with ``task``."""
    return {name: cls for name, cls in _load_all().items() if task is None or task in cls.tasks}


def weights_root(weights: str | Path | None = None) -> Path | None:
    """The weights folder: the argument, else $STUDIO_WEIGHTS, else None."""
    if weights is not None:
        return Path(weights)
    env = os.environ.get("STUDIO_WEIGHTS")
    return Path(env) if env else None


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclasses.dataclass(frozen=True)
class PipelineStatus:
    """Whether a pipeline can run here, and why."""

    name: str
    tasks: tuple[str, ...]
    weights_ok: bool
    weights_message: str  # where its weights were looked for, found or not
    needs_gpu: bool
    gpu_ok: bool  # needs no GPU, or one is present
    embedded: bool

    @property
    def runnable(self) -> bool:
        """It can run here when asked for (maybe slowly)."""
        return self.weights_ok

    @property
    def practical(self) -> bool:
        """It can run here at a practical speed: what ``auto`` and the web demo offer."""
        return self.weights_ok and self.gpu_ok


def pipeline_status(cls: type, weights: str | Path | None = None) -> PipelineStatus:
    """The status of one pipeline class with the weights folder ``weights`` (else $STUDIO_WEIGHTS)."""
    root = weights_root(weights)
    try:
        ok, message = cls.weights_status(root)
    except Exception as exc:  # a plug-in's check must not take the listing down
        ok, message = False, f"its weights check failed ({type(exc).__name__}: {exc})"
    needs_gpu = bool(getattr(cls, "needs_gpu", False))
    return PipelineStatus(
        name=cls.name, tasks=tuple(cls.tasks), weights_ok=bool(ok), weights_message=str(message), needs_gpu=needs_gpu,
        gpu_ok=not needs_gpu or has_cuda(), embedded=bool(getattr(cls, "embedded", False)),
    )  # fmt: skip


def statuses(task: str | None = None, weights: str | Path | None = None) -> list[PipelineStatus]:
    """The status of every registered pipeline (with ``task``)."""
    return [pipeline_status(cls, weights) for cls in registered_pipelines(task).values()]


def practical_pipelines(task: str, weights: str | Path | None = None) -> list[str]:
    """Names of the pipelines with ``task`` that can run here at a practical speed, the embedded
    default first: what the web demo's menus offer."""
    pipelines = registered_pipelines(task)
    names = [s.name for s in statuses(task, weights) if s.practical]
    return sorted(names, key=lambda n: (task not in pipelines[n].default_for, pipelines[n].embedded is False, n))


def resolve(task: str, name: str, weights: str | Path | None = None) -> tuple[type, str]:
    """The pipeline class to run for ``task`` and why: (class, reason).

    ``auto`` takes a pipeline whose weights are found and that runs at a practical speed here, else
    the embedded default for the task. A name must be a registered pipeline with the task whose
    weights are found (a GPU pipeline runs on a CPU when asked for by name, slowly).
    """
    if task not in TASKS:
        raise StudioError(f"unknown task '{task}'")
    pipelines = registered_pipelines(task)
    if name == "auto":
        skipped = []
        for status in statuses(task, weights):
            if status.embedded or not status.weights_ok:
                continue
            if status.gpu_ok:
                return pipelines[status.name], f"weights found: {status.weights_message}"
            skipped.append(f"{status.name} weights found but no CUDA GPU here (it would take hours; ask for --backend {status.name} to run it anyway)")
        defaults = [cls for cls in pipelines.values() if task in cls.default_for and pipeline_status(cls, weights).practical]
        if not defaults:
            raise StudioError(f"no pipeline for '{task}' can run here; see `studio pipelines`")
        reason = "embedded; " + ("; ".join(skipped) if skipped else "no pipeline weights found" + ("" if weights_root(weights) else " (no --weights and STUDIO_WEIGHTS is unset)"))
        return defaults[0], reason
    cls = pipelines.get(name)
    if cls is None:
        others = registered_pipelines().get(name)
        if others is not None:
            raise StudioError(f"the '{name}' pipeline does not do '{task}' (it does {', '.join(others.tasks)})")
        raise StudioError(f"unknown backend '{name}' for {task}; choose auto or one of {', '.join(pipelines) or '(none registered)'}")
    status = pipeline_status(cls, weights)
    if not status.weights_ok:
        raise StudioError(f"the '{name}' backend cannot run: {status.weights_message}")
    return cls, "asked for" if status.embedded else f"weights: {status.weights_message}"


__all__ = [
    "GROUP",
    "PipelineStatus",
    "has_cuda",
    "pipeline_status",
    "practical_pipelines",
    "registered_pipelines",
    "resolve",
    "statuses",
    "weights_root",
]
