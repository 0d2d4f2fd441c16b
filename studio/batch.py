"""``studio batch``: one job (pose, animate or render) over many files, spread over processes.

- Each input gets one output in the output folder, named after it (``OUT_DIR/<input name>.npz`` for
  pose, ``.mp4`` for animate and render). The job behind each is the single-file command's own
  (``studio.capture.pose_job``, ``studio.animate.animate``, ``studio render``), so every output is
  published atomically with its settings file beside it.
- Resumable: a finished item leaves a marker in ``OUT_DIR/.batch/`` holding its input's fingerprint
  (path, size, modification time) and the batch's options; a rerun skips items whose output and
  marker match, and redoes the rest (a partial output was never published; an animation continues
  from its checkpointed chunks).
- A failed item does not stop the batch: its one-line reason goes into the summary table,
  ``OUT_DIR/summary.tsv`` (input, output, status, seconds, process, reason), also printed.
- Scale-out: started with ``accelerate launch`` (or ``torchrun``), every process builds accelerate's
  process state (``PartialState``, on the CPU when there is no GPU), takes its share of the items
  (``split_between_processes``), and the results are gathered so that only the main process writes
  the summary. One GPU per process where there are GPUs; several machines work as in any accelerate
  job (the output folder must be shared).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from studio.errors import StudioError

logger = logging.getLogger(__name__)

JOBS = ("pose", "animate", "render")
MARKERS = ".batch"  # the folder of done-markers inside the output folder
SUMMARY = "summary.tsv"


@dataclasses.dataclass
class BatchOptions:
    """Options of a batch, passed to every item's job."""

    body: str = "anny"
    """pose: the body model (anny, smplx or smpl)."""
    hands: bool | None = None
    """pose: track and fit fingers (default: on for images, off for videos)."""
    focal: float | None = None
    """pose: the focal length in pixels (default: EXIF, else estimated)."""
    motion: str | None = None
    """animate: the motion every reference performs (a video, .bvh or motion .npz)."""
    backend: str = "auto"
    """animate: the pipeline."""
    settings: tuple[str, ...] = ()
    """animate: the pipeline's settings, key=value."""
    size: int = 512
    """animate and render: the longer side of the output in pixels."""
    maps: str = "depth,normal,semantic,skeleton,mask"
    """render: the guidance maps, side by side."""

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass
class BatchItem:
    """One input and what became of it."""

    input: Path
    output: Path
    status: str = "pending"  # "done" (made now), "skipped" (done before), "failed"
    reason: str = ""  # why it failed, one line
    seconds: float = 0.0
    process: int = 0  # the process that ran it


@dataclasses.dataclass
class BatchResult:
    items: list[BatchItem]
    summary: Path | None  # written by the main process only
    num_processes: int
    is_main: bool

    @property
    def failed(self) -> list[BatchItem]:
        return [i for i in self.items if i.status == "failed"]


def plan(job: str, inputs: Sequence[str | Path], out_dir: str | Path) -> list[BatchItem]:
    """The items of a batch: each input and its output, in the order given. Refuses an unknown job,
    no inputs, a missing input and two inputs that would write the same output."""
    if job not in JOBS:
        raise StudioError(f"unknown batch job '{job}'; choose one of {', '.join(JOBS)}")
    if not inputs:
        raise StudioError("no inputs given")
    out_dir = Path(out_dir)
    suffix = ".npz" if job == "pose" else ".mp4"
    items, seen = [], {}
    for raw in inputs:
        path = Path(raw)
        if not path.is_file():
            raise StudioError(f"{path}: no such file")
        output = out_dir / f"{path.stem}{suffix}"
        if output in seen:
            raise StudioError(f"{seen[output]} and {path} would both write {output}; rename one")
        seen[output] = path
        items.append(BatchItem(path, output))
    return items


def process_state():
    """accelerate's process state: the processes ``accelerate launch``/``torchrun`` started (on the
    CPU when no GPU is present), or this process alone."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def run_batch(
    job: str,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    options: BatchOptions | None = None,
    state=None,
    on_item: Callable[[BatchItem], None] | None = None,
) -> BatchResult:
    """Run ``job`` over ``inputs`` into ``out_dir`` (see the module docstring).

    Args:
        state: accelerate's ``PartialState`` (default: ``process_state()``).
        on_item: called in each process with every item it finishes (done, skipped or failed).
    Returns:
        Every item of every process (gathered), and the summary's path on the main process.
    """
    options = options or BatchOptions()
    items = plan(job, inputs, out_dir)
    out_dir = Path(out_dir)
    _check_options(job, options)
    state = state or process_state()
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MARKERS).mkdir(exist_ok=True)
    state.wait_for_everyone()
    runner = _Runner(job, options)
    with state.split_between_processes(items) as mine:
        for item in mine:
            item.process = state.process_index
            _run_item(runner, item, options)
            if on_item is not None:
                on_item(item)
    runner.close()
    done = list(mine)
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        done = gather_object(done)
    summary = None
    if state.is_main_process:
        order = {item.input: i for i, item in enumerate(items)}
        done = sorted(done, key=lambda item: order[item.input])
        summary = write_summary(out_dir / SUMMARY, done)
    state.wait_for_everyone()
    return BatchResult(done, summary, state.num_processes, state.is_main_process)


def _check_options(job: str, options: BatchOptions) -> None:
    from studio import validate

    if job == "animate":
        if options.motion is None:
            raise StudioError("studio batch animate needs --motion (a video, .bvh or motion .npz every reference performs)")
        if not Path(options.motion).is_file():
            raise StudioError(f"{options.motion}: no such file")
        validate.integer(options.size, name="--size", low=64, high=validate.MAX_SIZE)
    if job == "render":
        from studio.render import parse_maps

        parse_maps(options.maps)
        validate.size(options.size)
    if options.focal is not None:
        validate.focal(options.focal, name="--focal")


def _marker(item: BatchItem) -> Path:
    return item.output.parent / MARKERS / f"{item.output.name}.json"


def _input_fingerprint(path: Path, options: BatchOptions) -> dict:
    st = path.stat()
    return {"input": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "options": options.fingerprint()}


def is_done(item: BatchItem, options: BatchOptions) -> bool:
    """Whether an item was finished by an earlier run with the same input and options."""
    marker = _marker(item)
    if not (item.output.exists() and marker.is_file()):
        return False
    try:
        return json.loads(marker.read_text()) == _input_fingerprint(item.input, options)
    except (OSError, ValueError):
        return False


def _run_item(runner: _Runner, item: BatchItem, options: BatchOptions) -> None:
    """Run one item, recording its status and one-line reason; never raises for the item's own
    failure (Ctrl-C still stops the batch)."""
    from studio.outputs import USER_OS_ERRORS, atomic_path, os_error_message

    if is_done(item, options):
        item.status = "skipped"
        return
    start = time.perf_counter()
    try:
        runner(item)
        with atomic_path(_marker(item)) as tmp:
            tmp.write_text(json.dumps(_input_fingerprint(item.input, options)))
        item.status = "done"
    except StudioError as exc:
        item.status, item.reason = "failed", str(exc)
    except OSError as exc:
        item.status = "failed"
        item.reason = os_error_message(exc) if exc.errno in USER_OS_ERRORS else f"internal error: {type(exc).__name__}: {exc}"
    except MemoryError:
        item.status, item.reason = "failed", "out of memory"
    except Exception as exc:  # a bug in one item: recorded, and the batch goes on
        logger.debug("item %s failed", item.input, exc_info=True)
        item.status, item.reason = "failed", f"internal error: {type(exc).__name__}: {exc}"
    item.reason = " ".join(item.reason.split())  # one line
    item.seconds = time.perf_counter() - start


class _Runner:
    """Runs one item of a job; what every item shares (the body model, the pipeline) is loaded once
    per process."""

    def __init__(self, job: str, options: BatchOptions) -> None:
        self.job, self.options = job, options
        self._model = None

    def model(self):
        from studio.body import load_body_model

        if self._model is None:
            self._model = load_body_model(self.options.body if self.job == "pose" else "anny")
        return self._model

    def __call__(self, item: BatchItem) -> None:
        getattr(self, f"_{self.job}")(item)

    def _pose(self, item: BatchItem) -> None:
        from studio.capture import pose_job
        from studio.fit import FitConfig

        pose_job(item.input, item.output, body_model=self.model(), config=FitConfig(focal_length=self.options.focal), hands=self.options.hands)

    def _animate(self, item: BatchItem) -> None:
        from studio.animate import AnimateConfig, animate

        o = self.options
        config = AnimateConfig(backend=o.backend, size=o.size, settings=tuple(o.settings))
        animate(item.input, o.motion, item.output, config=config, body_model=self.model(), resume=True)

    def _render(self, item: BatchItem) -> None:
        import sys

        from studio import cli

        # `studio render`'s job lives in the command itself; its console writes where this process's
        # stderr is now (as `cli.run` arranges for every command).
        cli.console.file = sys.stderr
        cli.render(motion=item.input, output=str(item.output), maps=self.options.maps, size=self.options.size, body_model_dir=None, labels=True)

    def close(self) -> None:
        self._model = None


def write_summary(path: Path, items: list[BatchItem]) -> Path:
    """The summary table as tab-separated text (atomically)."""
    from studio.outputs import atomic_path

    lines = ["input\toutput\tstatus\tseconds\tprocess\treason"]
    for i in items:
        lines.append(f"{i.input}\t{i.output}\t{i.status}\t{i.seconds:.1f}\t{i.process}\t{i.reason}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def read_summary(path: str | Path) -> list[dict[str, str]]:
    """The rows of a summary table as dicts (for tests and scripts)."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]
