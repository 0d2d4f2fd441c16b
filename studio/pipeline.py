"""The pipeline contract: what a generation pipeline declares and what studio hands it.

A pipeline is a class registered under the ``studio.pipelines`` entry-point group (see
``studio.registry``). It declares, as class attributes:

- ``name``: what users type after ``--backend``;
- ``tasks``: drawn from ``TASKS`` (``animate``: reference image + motion -> frames; ``image``: prompt
  and/or pose -> image; ``avatar``: image -> 3D avatar file; ``novel_view``: image(s) + condition +
  target cameras/poses -> images; ``hoi``: text -> human + object scene);
- ``Config``: a dataclass whose fields, each with a docstring, are the pipeline's knobs (the CLI's
  ``--set key=value`` and the web demo's settings are built from it);
- ``required_conditions`` / ``optional_conditions``: names of request fields (see the request classes'
  ``CONDITIONS``) that studio checks before calling, with one clear line when one is missing;
- ``needs_gpu`` (too slow on a CPU to be chosen by ``auto``), ``embedded`` (needs no weights) and
  ``default_for`` (the tasks it is the embedded default of, chosen by ``auto`` when no pipeline with
  weights can run);
- for ``animate``: ``chunk_frames``, the frames it renders per call (None: the whole motion in one
  call, for methods whose windows span the video);

and provides ``weights_status(root) -> (ok, message)`` (a classmethod that loads nothing),
``load(weights, config) -> pipeline`` (from a weights folder, or from nothing when embedded), one
method per task taking that task's request dataclass and returning its result dataclass
(``animate(AnimateRequest) -> AnimateResult``, ...), and optionally ``start(request)`` (begin work that
needs only the reference photo and its person mask, overlapping the reference fit), ``close()``, and
``body_model_for(root, config) -> str`` (a classmethod naming the body model its weights were trained on,
e.g. ``"smpl"``: the novel-view job then fits the photos with that model), and a ``notes`` list of lines
for the user (e.g. "the left hand holds something"), which every job reads (``take_notes``) and reports.
``PipelineBase`` gives the defaults; subclassing it is optional.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import logging
import os
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from studio.errors import StudioError

logger = logging.getLogger(__name__)

TASKS = ("animate", "image", "avatar", "novel_view", "hoi")
Task = Literal["animate", "image", "avatar", "novel_view", "hoi"]
ProgressCallback = Callable[[int, int], None]  # (units done, units in all)


# --- requests and results, one pair per task ---------------------------------------------------------


@dataclasses.dataclass
class AnimateRequest:
    """One call of an animate pipeline: the reference person and a chunk of the motion.

    Frames are ``size`` pixels; ``motion``'s camera is the output camera (its image size ``size``).
    """

    CONDITIONS: ClassVar[tuple[str, ...]] = ("reference", "reference_mask", "reference_condition", "motion")

    reference: np.ndarray | None  # [H, W, 3] uint8, the photo at full resolution
    reference_mask: np.ndarray | None  # [H, W] uint8 person mask of the photo (255 = person)
    reference_condition: Any  # HumanCondition, T=1: the fitted photo (camera of an H x W image)
    motion: Any  # HumanCondition, T frames: the motion on the reference's body, in the output camera
    size: tuple[int, int]  # (height, width) of the frames
    body_model: Any  # the BodyModel both conditions use
    seed: int = 0
    frame_offset: int = 0  # index of ``motion``'s first frame in the whole animation
    total_frames: int | None = None  # frames of the whole animation
    checkpoint_dir: Path | None = None  # where a pipeline may keep state to resume inside one call
    on_progress: ProgressCallback | None = None


@dataclasses.dataclass
class AnimateResult:
    frames: np.ndarray  # [T, H, W, 3] uint8


@dataclasses.dataclass
class ImageRequest:
    """One image from a prompt and/or a pose."""

    CONDITIONS: ClassVar[tuple[str, ...]] = ("prompt", "pose")

    prompt: str | None
    pose: Any  # HumanCondition with one frame, or None
    size: tuple[int, int]  # (height, width)
    body_model: Any = None
    negative_prompt: str | None = None
    seed: int = 0
    on_progress: ProgressCallback | None = None


@dataclasses.dataclass
class ImageResult:
    image: np.ndarray  # [H, W, 3] uint8
    maps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # extra outputs (depth, normal, ...)


@dataclasses.dataclass
class AvatarRequest:
    """A 3D avatar of the person in one photo, written to ``output``."""

    CONDITIONS: ClassVar[tuple[str, ...]] = ("reference", "reference_mask", "reference_condition")

    reference: np.ndarray | None  # [H, W, 3] uint8
    reference_mask: np.ndarray | None  # [H, W] uint8
    reference_condition: Any  # HumanCondition, T=1
    body_model: Any
    output: Path
    seed: int = 0
    on_progress: ProgressCallback | None = None


@dataclasses.dataclass
class AvatarResult:
    path: Path
    preview: np.ndarray | None = None  # [T, H, W, 3] uint8, e.g. an orbit


@dataclasses.dataclass
class NovelViewRequest:
    """The person of one or more photos rendered for target cameras and poses."""

    CONDITIONS: ClassVar[tuple[str, ...]] = ("references", "reference_masks", "reference_conditions", "target")

    references: list[np.ndarray] | None  # each [H, W, 3] uint8
    reference_masks: list[np.ndarray] | None  # each [H, W] uint8
    reference_conditions: list[Any] | None  # one HumanCondition (T=1) per photo
    target: Any  # HumanCondition, T frames: target poses and cameras
    size: tuple[int, int]
    body_model: Any
    seed: int = 0
    on_progress: ProgressCallback | None = None


@dataclasses.dataclass
class NovelViewResult:
    frames: np.ndarray  # [T, H, W, 3] uint8


@dataclasses.dataclass
class HoiRequest:
    """A human and an object interacting, from text."""

    CONDITIONS: ClassVar[tuple[str, ...]] = ("prompt", "object")

    prompt: str | None
    object: str | Path | None = None  # an object name or a mesh file
    body_model: Any = None
    seed: int = 0
    on_progress: ProgressCallback | None = None


@dataclasses.dataclass
class HoiResult:
    condition: Any  # HumanCondition of the posed human (T=1)
    scene: Any  # a trimesh.Scene with the human and the object as separate named meshes
    image: np.ndarray | None = None  # [H, W, 3] uint8 rendering
    report: dict = dataclasses.field(default_factory=dict)  # contacts, penetration, what was understood


REQUESTS: dict[str, type] = {
    "animate": AnimateRequest,
    "image": ImageRequest,
    "avatar": AvatarRequest,
    "novel_view": NovelViewRequest,
    "hoi": HoiRequest,
}
RESULTS: dict[str, type] = {
    "animate": AnimateResult,
    "image": ImageResult,
    "avatar": AvatarResult,
    "novel_view": NovelViewResult,
    "hoi": HoiResult,
}
# How a missing condition is described to the user.
CONDITION_WORDS = {
    "reference": "a reference photo",
    "reference_mask": "the reference's person mask",
    "reference_condition": "the body fitted to the reference",
    "motion": "a motion",
    "prompt": "a prompt",
    "pose": "a pose (a motion .npz frame)",
    "references": "one or more reference photos",
    "reference_masks": "the references' person masks",
    "reference_conditions": "the bodies fitted to the references",
    "target": "target poses and cameras",
    "object": "an object",
}


# --- the protocol --------------------------------------------------------------------------------


@runtime_checkable
class Pipeline(Protocol):
    """What studio expects of a registered pipeline class (see the module docstring)."""

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    Config: ClassVar[type]
    required_conditions: ClassVar[tuple[str, ...]]
    optional_conditions: ClassVar[tuple[str, ...]]
    needs_gpu: ClassVar[bool]
    embedded: ClassVar[bool]
    default_for: ClassVar[tuple[str, ...]]

    @classmethod
    def weights_status(cls, root: Path | None) -> tuple[bool, str]: ...

    @classmethod
    def load(cls, weights: Path | None, config: Any) -> Pipeline: ...

    def close(self) -> None: ...


@dataclasses.dataclass
class NoSettings:
    """This pipeline has no settings."""


class PipelineBase:
    """Defaults for the contract's optional parts. Subclasses set ``name``, ``tasks`` and ``Config``
    and implement ``load`` and one method per task."""

    name: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type] = NoSettings
    required_conditions: ClassVar[tuple[str, ...]] = ()
    optional_conditions: ClassVar[tuple[str, ...]] = ()
    needs_gpu: ClassVar[bool] = False
    embedded: ClassVar[bool] = False
    default_for: ClassVar[tuple[str, ...]] = ()
    chunk_frames: ClassVar[int | None] = None
    weights_help: ClassVar[str] = ""  # where the weights come from, for `studio pipelines`

    @classmethod
    def weights_status(cls, root: Path | None) -> tuple[bool, str]:
        if cls.embedded:
            return True, "embedded (needs no weights)"
        raise NotImplementedError(f"{cls.__name__} must say whether its weights are found")

    @classmethod
    def load(cls, weights: Path | None, config: Any) -> PipelineBase:
        raise NotImplementedError

    def start(self, request: Any) -> None:
        """Begin work that needs only the reference photo and its mask (optional)."""

    def close(self) -> None:
        """Release what the pipeline holds (GL contexts, GPU memory)."""


def check_pipeline_class(cls: type) -> list[str]:
    """What a registered class lacks of the contract (empty when it complies)."""
    problems = []
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        problems.append("no name")
    tasks = getattr(cls, "tasks", None)
    if not tasks or not set(tasks) <= set(TASKS):
        problems.append(f"tasks must be drawn from {', '.join(TASKS)}, got {tasks!r}")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        problems.append("Config must be a dataclass")
    for attr in ("weights_status", "load"):
        if not callable(getattr(cls, attr, None)):
            problems.append(f"no {attr}()")
    for task in tasks or ():
        if task in TASKS and not callable(getattr(cls, task, None)):
            problems.append(f"declares the task '{task}' but has no {task}() method")
    known = {c for t in tasks or () if t in REQUESTS for c in REQUESTS[t].CONDITIONS}
    for attr in ("required_conditions", "optional_conditions"):
        unknown = set(getattr(cls, attr, ()) or ()) - known
        if unknown:
            problems.append(f"{attr} names {sorted(unknown)}, which its tasks' requests do not have")
    return problems


def check_request(cls: type, request: Any) -> None:
    """Refuse a request that lacks a condition the pipeline requires: one line naming it."""
    for name in getattr(cls, "required_conditions", ()):
        if hasattr(request, name) and getattr(request, name) is None:
            raise StudioError(f"the {cls.name} pipeline needs {CONDITION_WORDS.get(name, name)} ('{name}')")


def take_notes(pipe: Any) -> list[str]:
    """The lines ``pipe`` has for the user since last asked (its optional ``notes`` list, emptied so
    that each is told once)."""
    notes = getattr(pipe, "notes", None)
    if not notes:
        return []
    taken = [str(n) for n in notes]
    notes.clear()
    return taken


@contextlib.contextmanager
def pipeline_errors(name: str) -> Iterator[None]:
    """Inside, a pipeline's ValueError (how pipelines and body models refuse bad input) becomes a
    user error naming the pipeline: one line at the CLI, never "internal error"."""
    try:
        yield
    except StudioError:
        raise
    except ValueError as exc:
        raise StudioError(f"{name}: {exc}") from exc


# --- configs: fields, docs, parsing --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One knob of a pipeline's Config."""

    name: str
    type: Any  # the annotation, resolved
    default: Any
    doc: str

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    @property
    def choices(self) -> tuple | None:
        base = _strip_optional(self.type)
        return typing.get_args(base) if typing.get_origin(base) is Literal else None

    @property
    def names_a_path(self) -> bool:
        """Whether the knob names a file or folder on the machine that runs the job (never taken from a
        web request: the web demo offers no widget for it)."""
        base = _strip_optional(self.type)
        union = typing.get_origin(base) in (typing.Union, types.UnionType)
        return any(isinstance(t, type) and issubclass(t, os.PathLike) for t in (typing.get_args(base) if union else (base,)))


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def _type_name(tp: Any) -> str:
    base = _strip_optional(tp)
    if typing.get_origin(base) is Literal:
        name = "|".join(map(str, typing.get_args(base)))
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} or none" if _is_optional(tp) else name


def _field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under each field of a dataclass (read from its source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, following in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def config_fields(config_class: type) -> list[ConfigField]:
    """The knobs of a Config dataclass: name, type, default and documentation."""
    hints = typing.get_type_hints(config_class)
    docs = _field_docs(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        if not f.init or f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        out.append(ConfigField(f.name, hints.get(f.name, Any), default, docs.get(f.name, f.metadata.get("doc", ""))))
    return out


def describe_settings(config_class: type) -> str:
    """One line listing the valid keys with their types and defaults."""
    fields = config_fields(config_class)
    if not fields:
        return "it has no settings"
    return "its settings are " + ", ".join(f"{f.name} ({f.type_name}, default {f.default!r})" for f in fields)


def parse_value(field: ConfigField, text: str) -> Any:
    """A setting's text as the field's type; ValueError with the expected type otherwise."""
    tp = field.type
    if _is_optional(tp) and text.strip().lower() in ("none", "null", ""):
        return None
    base = _strip_optional(tp)
    if typing.get_origin(base) is Literal:
        for choice in typing.get_args(base):
            if str(choice) == text:
                return choice
        raise ValueError(f"one of {', '.join(map(str, typing.get_args(base)))}")
    if base is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("true or false")
    if base is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if base is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("a number") from None
        if not np.isfinite(value):
            raise ValueError("a finite number")
        return value
    if base is Path:
        return Path(text)
    if base is str:
        return text
    raise ValueError(f"a {_type_name(base)} (which cannot be set from text)")


def make_config(pipeline: type, settings: Sequence[str] | dict[str, Any] = ()) -> Any:
    """The pipeline's Config with ``settings`` applied: "key=value" strings (from ``--set``) or a
    dict of values. One StudioError naming the key for an unknown key or a bad value."""
    config_class = pipeline.Config
    fields = {f.name: f for f in config_fields(config_class)}
    values: dict[str, Any] = {}
    items = settings.items() if isinstance(settings, dict) else [_split_setting(s) for s in settings]
    for key, value in items:
        if key not in fields:
            raise StudioError(f"unknown setting '{key}' for the {pipeline.name} pipeline; {describe_settings(config_class)}")
        field = fields[key]
        if isinstance(value, str):
            try:
                value = parse_value(field, value)
            except ValueError as exc:
                raise StudioError(f"setting {key}={value!r} for {pipeline.name}: expected {exc}") from None
        values[key] = value
    try:
        return config_class(**values)
    except (ValueError, TypeError) as exc:
        raise StudioError(f"{pipeline.name} settings: {exc}") from None


def _split_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise StudioError(f"--set takes key=value, got '{text}'")
    return key.strip(), value.strip()


def config_dict(config: Any) -> dict[str, Any]:
    """A Config as JSON-ready values (for the settings file beside an output)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


__all__ = [
    "CONDITION_WORDS",
    "REQUESTS",
    "RESULTS",
    "TASKS",
    "AnimateRequest",
    "AnimateResult",
    "AvatarRequest",
    "AvatarResult",
    "ConfigField",
    "HoiRequest",
    "HoiResult",
    "ImageRequest",
    "ImageResult",
    "NoSettings",
    "NovelViewRequest",
    "NovelViewResult",
    "Pipeline",
    "PipelineBase",
    "Task",
    "check_pipeline_class",
    "check_request",
    "config_dict",
    "config_fields",
    "describe_settings",
    "make_config",
    "parse_value",
    "pipeline_errors",
    "take_notes",
]
