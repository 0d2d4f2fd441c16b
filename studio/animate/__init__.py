"""``studio animate``: the person in a reference image performing a motion.

Backends: ``mesh`` (embedded, needs no weights: a textured body-model avatar, see ``avatar``) and the
diffusion pipelines registered under ``studio.pipelines`` that can animate (Champ). ``auto`` takes a
registered one whose weights are found, otherwise ``mesh``.

Work is checkpointed: frames are rendered in chunks into ``OUT.partial/`` beside the output (each
chunk written atomically, with the resolved settings), and the video is assembled only at the end,
so an interrupted run leaves no ``OUT.mp4`` that looks complete and ``resume=True`` continues from
the last finished chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from studio.body.base import BodyModel
from studio.condition import HumanCondition
from studio.errors import StudioError
from studio.media import IMAGE_SUFFIXES, VIDEO_OUTPUT_SUFFIXES, VideoReader, VideoWriter, atomic_path, hstack_frames, read_image
from studio.motion.loader import load_motion, motion_duration
from studio.outputs import Publication

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "mesh", "champ")


@dataclasses.dataclass
class AnimateConfig:
    """Settings of one animation (saved beside the output as JSON)."""

    backend: str = "auto"
    """"auto", "mesh" (embedded) or a registered pipeline such as "champ"."""
    size: int = 512
    """Longer side of the output in pixels (the reference image's aspect is kept)."""
    weights: str | None = None
    """Folder with pipeline weights (else $STUDIO_WEIGHTS)."""
    person: int | None = None
    """Which person of the reference to animate when several are in it (0 = largest)."""
    keep_in_view: bool = True
    """Push the body back and shorten its travel when it would leave the picture."""
    chunk_size: int = 16
    """Frames rendered (and checkpointed) together by the mesh backend."""
    steps: int | None = None
    """Denoising steps of a diffusion backend (None: the pipeline's default)."""
    seed: int = 0
    """Seed of a diffusion backend's noise."""


@dataclasses.dataclass
class AnimateResult:
    output: Path
    backend: str
    num_frames: int
    fps: float
    notes: list[str]  # things the user should be told (several people, legs cut off, placement)
    settings_path: Path


def resolve_backend(name: str, weights: str | None) -> tuple[str, str]:
    """The backend to run and why: (name, reason)."""
    from studio.registry import registered_pipelines, weights_root

    if name not in BACKENDS:
        raise StudioError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    if name == "mesh":
        return "mesh", "asked for"
    pipelines = registered_pipelines()
    root = weights_root(weights)
    if name == "auto":
        skipped = []
        for pname, cls in pipelines.items():
            if getattr(cls, "can_animate", False):
                ok, _ = cls.weights_status(root)
                if ok and getattr(cls, "needs_gpu", False) and not _has_cuda():
                    skipped.append(f"{pname} weights found but no CUDA GPU here (it would take hours; ask for --backend {pname} to run it anyway)")
                elif ok:
                    return pname, f"weights found in {root}"
        if skipped:
            return "mesh", "embedded; " + "; ".join(skipped)
        return "mesh", "embedded; no diffusion weights found" + ("" if root else " (no --weights and STUDIO_WEIGHTS is unset)")
    cls = pipelines.get(name)
    if cls is None or not getattr(cls, "can_animate", False):
        raise StudioError(f"the '{name}' backend is not available in this installation (available: mesh)")
    ok, message = cls.weights_status(root)
    if not ok:
        raise StudioError(f"the '{name}' backend cannot run: {message}")
    return name, f"weights in {root}"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def output_size(image_size: tuple[int, int], longer: int) -> tuple[int, int]:
    """(height, width) with the longer side ``longer``, the aspect of ``image_size``, both even."""
    h, w = image_size
    s = longer / max(h, w)
    return max(2, round(h * s / 2) * 2), max(2, round(w * s / 2) * 2)


def _fingerprint(*paths: Path, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for p in paths:
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


def animate(
    reference: str | Path,
    motion: str | Path,
    output: str | Path,
    *,
    config: AnimateConfig | None = None,
    body_model: BodyModel,
    resume: bool = False,
    guidance_out: str | Path | None = None,
    side_by_side: str | Path | None = None,
    on_stage: Callable[[str, int], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> AnimateResult:
    """Animate the person in ``reference`` with ``motion`` into the video ``output``.

    Args:
        on_stage: called with (stage name, total frames of that stage) as work moves on.
        on_frames: called with a number of frames finished in the current stage.
    """
    config = config or AnimateConfig()
    reference, motion, output = Path(reference), Path(motion), Path(output)
    for path, what in ((output, "the output"), (guidance_out, "--guidance-out"), (side_by_side, "--side-by-side")):
        if path is not None and Path(path).suffix.lower() not in VIDEO_OUTPUT_SUFFIXES:
            raise StudioError(f"{path}: {what} must end in {', '.join(VIDEO_OUTPUT_SUFFIXES)}")
    if reference.suffix.lower() not in IMAGE_SUFFIXES:
        raise StudioError(f"{reference}: the reference must be an image ({', '.join(IMAGE_SUFFIXES)})")
    settings_path = output.with_suffix(".json")
    partial = output.with_name(output.name + ".partial")
    outputs = {"-o": output, "--guidance-out": guidance_out, "--side-by-side": side_by_side, "the settings file": settings_path}
    # Every output is published together when all are complete; the checkpoint folder goes after that.
    with Publication(outputs, inputs={"REFERENCE": reference, "MOTION": motion, "the checkpoint folder": partial}):
        result = _animate(
            reference, motion, output, config=config, body_model=body_model, resume=resume, guidance_out=guidance_out,
            side_by_side=side_by_side, on_stage=on_stage, on_frames=on_frames, partial=partial, settings_path=settings_path,
        )  # fmt: skip
    shutil.rmtree(partial, ignore_errors=True)
    return result


def _animate(
    reference: Path,
    motion: Path,
    output: Path,
    *,
    config: AnimateConfig,
    body_model: BodyModel,
    resume: bool,
    guidance_out: str | Path | None,
    side_by_side: str | Path | None,
    on_stage: Callable[[str, int], None] | None,
    on_frames: Callable[[int], None] | None,
    partial: Path,
    settings_path: Path,
) -> AnimateResult:
    backend, reason = resolve_backend(config.backend, config.weights)
    motion_duration(motion)  # a motion that cannot be read is refused now, before the reference is fitted
    notes = [f"backend: {backend} ({reason})"]
    stage = on_stage or (lambda name, total: None)

    # The reference: one person, fitted with hands and face, with a person mask.
    from studio.fit import pose_image
    from studio.pose import load_estimator

    image = read_image(reference)
    stage("fitting the reference", 1)
    size = output_size(image.shape[:2], config.size)
    pool = ThreadPoolExecutor(max_workers=1)
    background: list[Future] = []

    def start_background(kp) -> None:  # inpainting needs only the mask: overlap it with the fit
        if backend == "mesh":
            from studio.animate.avatar import inpaint_person

            background.append(pool.submit(inpaint_person, image, kp.mask[0], size))

    try:
        ref = pose_image(
            image, body_model=body_model, estimator=load_estimator(hands=True, face=True), person=config.person, on_keypoints=start_background
        )
    except StudioError as exc:
        pool.shutdown(cancel_futures=True)
        raise StudioError(f"{reference}: {exc}") from exc
    if ref.num_people > 1:
        notes.append(f"{ref.num_people} people in the reference; animating person {ref.person} (choose with --person)")
    from studio.body.joints import JOINT_INDEX

    legs = [JOINT_INDEX[n] for n in ("left_ankle", "right_ankle", "left_knee", "right_knee")]
    h, w = image.shape[:2]
    pts = ref.keypoints.points[0, legs]
    seen = (ref.keypoints.confidence[0, legs] > 0.5) & (pts[:, 1] < h) & (pts[:, 0] >= 0) & (pts[:, 0] < w)
    if not seen.all():
        notes.append("the reference's legs are not fully visible (full-body references work best)")
    if on_frames:
        on_frames(1)

    stage("reading the motion", 0)
    motion_cond, kind = load_motion(motion, body_model, on_frames=on_frames)
    if motion_cond.num_frames == 0:
        raise StudioError(f"{motion}: the motion has no frames")
    motion_model = body_model if motion_cond.body_model == body_model.name else _other_model(motion_cond.body_model)

    from studio.animate.transfer import transfer_motion

    cond, placement = transfer_motion(
        motion_cond, ref.condition, motion_model=motion_model, reference_model=body_model, image_size=size, keep_in_view=config.keep_in_view
    )
    if placement["path_factor"] < 1.0 or placement["depth_factor"] > 1.0:
        notes.append(
            f"to keep the person in view, moved them {placement['depth_factor']:.2f}x as far from the camera"
            + (f" and kept {placement['path_factor']:.0%} of their travel" if placement["path_factor"] < 1.0 else "")
        )

    settings = {
        "reference": str(reference),
        "motion": str(motion),
        "motion_kind": kind,
        "backend": backend,
        "config": dataclasses.asdict(config),
        "output_size": list(size),
        "frames": cond.num_frames,
        "fps": cond.fps,
        "body_model": body_model.name,
        "placement": placement,
    }
    fingerprint = _fingerprint(reference, motion, settings={k: v for k, v in settings.items() if k != "frames"})
    settings["fingerprint"] = fingerprint
    state_file = partial / "settings.json"
    if partial.exists() and not (resume and _saved_fingerprint(state_file) == fingerprint):
        if resume:
            notes.append("the unfinished run does not match these inputs and settings; starting over")
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    with atomic_path(state_file) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))

    # Render chunk by chunk; finished chunks are kept for --resume. Diffusion backends denoise the
    # whole motion at once (their windows overlap) and checkpoint per denoising step instead.
    chunk = config.chunk_size if backend == "mesh" else cond.num_frames
    chunks = [(s, min(s + chunk, cond.num_frames)) for s in range(0, cond.num_frames, chunk)]
    done = [i for i, _ in enumerate(chunks) if (partial / f"chunk_{i:05d}.npy").is_file()]
    if done:
        notes.append(f"resumed: {len(done)} of {len(chunks)} chunks were already rendered")
    stage(f"animating ({backend})", cond.num_frames)
    if on_frames and done:
        on_frames(sum(chunks[i][1] - chunks[i][0] for i in done))
    renderer = None
    try:
        for i, (a, b) in enumerate(chunks):
            path = partial / f"chunk_{i:05d}.npy"
            if path.is_file():
                continue
            if renderer is None:
                if backend == "mesh":
                    renderer = _mesh_renderer(image, ref, body_model, size, background[0].result() if background else None)
                else:
                    renderer = PipelineAnimator(backend, config, image, size, body_model, state_dir=partial, on_stage=stage, on_frames=on_frames)
            frames = renderer.render(cond[a:b])
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, frames)
            if on_frames:
                on_frames(b - a)
    finally:
        pool.shutdown(cancel_futures=True)
        if renderer is not None:
            renderer.release()

    # Assemble the outputs; the partial folder goes only when everything is written.
    stage("writing the video", cond.num_frames)
    with VideoWriter(output, fps=cond.fps) as writer:
        for i in range(len(chunks)):
            for frame in np.load(partial / f"chunk_{i:05d}.npy"):
                writer.write(frame)
    if guidance_out is not None:
        from studio.render import iter_map_video_frames

        with VideoWriter(guidance_out, fps=cond.fps) as writer:
            for frame in iter_map_video_frames(cond, ("depth", "normal", "semantic", "skeleton"), body_model=body_model):
                writer.write(frame)
    if side_by_side is not None:
        _write_side_by_side(side_by_side, image, motion, kind, motion_cond, motion_model, cond, body_model, partial, chunks, size)
    settings["notes"] = notes
    with atomic_path(settings_path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))
    return AnimateResult(output, backend, cond.num_frames, cond.fps, notes, settings_path)


def _saved_fingerprint(state_file: Path) -> str | None:
    """The fingerprint an unfinished run saved, or None when there is none or it is unreadable."""
    try:
        return json.loads(state_file.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _other_model(name: str) -> BodyModel:
    from studio.body import load_body_model

    return load_body_model(name)


class PipelineAnimator:
    """A registered diffusion pipeline as an animate backend.

    The pipeline class provides ``from_pretrained(weights)`` and ``animate(reference, condition, *, height,
    width, steps, seed, body_model, checkpoint_dir, callback) -> [T, H, W, 3] uint8``.
    """

    def __init__(self, backend: str, config: AnimateConfig, image: np.ndarray, size: tuple[int, int], body_model: BodyModel, *, state_dir: Path, on_stage, on_frames):
        from studio.registry import registered_pipelines, weights_root

        stage = on_stage or (lambda name, total: None)
        stage(f"loading {backend}", 0)
        self.pipe = registered_pipelines()[backend].from_pretrained(weights_root(config.weights))
        self.backend, self.config, self.image, self.size, self.body_model = backend, config, image, size, body_model
        self.state_dir, self.stage, self.on_frames = state_dir, stage, on_frames

    def render(self, cond: HumanCondition) -> np.ndarray:
        last: list[int | None] = [None]

        def callback(finished: int, total: int) -> None:  # units of (window, step); a resumed run starts past 0
            if last[0] is None:
                self.stage(f"denoising ({self.backend})", total)
                last[0] = 0
            if self.on_frames:
                self.on_frames(finished - last[0])
            last[0] = finished

        h, w = self.size
        return self.pipe.animate(
            self.image, cond, height=h, width=w, steps=self.config.steps, seed=self.config.seed, body_model=self.body_model,
            checkpoint_dir=self.state_dir, callback=callback,
        )

    def release(self) -> None:
        self.pipe = None
        import gc

        gc.collect()
        if _has_cuda():
            import torch

            torch.cuda.empty_cache()


def _mesh_renderer(image: np.ndarray, ref, body_model: BodyModel, size: tuple[int, int], background: np.ndarray | None):
    from studio.animate.avatar import AvatarRenderer, build_avatar

    avatar = build_avatar(image, ref.keypoints.mask[0], ref.condition, body_model=body_model, output_size=size, background=background)
    return AvatarRenderer(avatar, body_model, output_size=size)


def _write_side_by_side(path, image, motion_path, kind, motion_cond, motion_model, cond, body_model, partial, chunks, size) -> None:
    """reference | driving frame | guidance (normal map) | result, one row per frame."""
    import cv2

    h, w = size
    ref_tile = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if kind == "video":
        driving = (cv2.resize(f, (round(f.shape[1] * h / f.shape[0] / 2) * 2, h), interpolation=cv2.INTER_AREA) for f in VideoReader(motion_path, max_side=2 * max(h, w)))
    else:  # mocap: the motion as the body model shows it in its own framing
        from studio.render import iter_map_video_frames

        driving = iter_map_video_frames(motion_cond, ("normal",), size=h, body_model=motion_model, labels=False)
    from studio.render import iter_map_video_frames

    guidance = iter_map_video_frames(cond, ("normal",), body_model=body_model, labels=False)
    labels = ["reference", "motion", "guidance", "result"]
    with VideoWriter(path, fps=cond.fps) as writer:
        for i in range(len(chunks)):
            for frame in np.load(partial / f"chunk_{i:05d}.npy"):
                drive = next(driving, None)
                drive = np.zeros((h, w, 3), np.uint8) if drive is None else drive
                if drive.shape[0] != h:
                    drive = cv2.resize(drive, (round(drive.shape[1] * h / drive.shape[0] / 2) * 2, h))
                writer.write(hstack_frames([ref_tile, drive, next(guidance), frame], labels=labels))


__all__ = ["AnimateConfig", "AnimateResult", "BACKENDS", "animate", "load_motion", "output_size", "resolve_backend"]
