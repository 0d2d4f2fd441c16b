"""The jobs behind ``studio avatar``, ``studio image``, ``studio novel-view`` and ``studio hoi``: one
function per task, the same for every pipeline with that task (``studio animate``'s job is
``studio.animate``).

Each job resolves the pipeline through the registry, checks its settings against its Config before
any work, builds the task's request (fitting the reference photos where the task needs them),
checks the request against the pipeline's required conditions, calls the pipeline, and publishes
every output together with the resolved settings beside the main one (``studio.outputs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from studio.body.base import BodyModel
from studio.camera import orbit_cameras, output_size
from studio.errors import StudioError
from studio.jobs import settings_path, write_settings
from studio.media import IMAGE_SUFFIXES, VIDEO_OUTPUT_SUFFIXES, VideoWriter, read_image, write_image
from studio.outputs import Publication
from studio.pipeline import (
    AvatarRequest,
    HoiRequest,
    ImageRequest,
    NovelViewRequest,
    check_request,
    config_dict,
    make_config,
    pipeline_errors,
    take_notes,
)

Stage = Callable[[str, int], None]
Frames = Callable[[int], None]
SCENE_SUFFIXES = (".glb", ".gltf", ".obj", ".ply")


@dataclasses.dataclass
class TaskOptions:
    """What every task's command takes besides its inputs (saved in the settings file)."""

    backend: str = "auto"
    """A registered pipeline with the task, or "auto" (one whose weights are found and that runs at a
    practical speed here, else the task's embedded default)."""
    weights: str | None = None
    """Folder with pipeline weights (else $STUDIO_WEIGHTS)."""
    settings: tuple[str, ...] | dict = ()
    """The pipeline's own settings: "key=value" strings (``--set``) or a dict, checked against its Config."""
    seed: int = 0
    """Seed of a stochastic pipeline."""


@dataclasses.dataclass
class TaskOutput:
    """What a task's job wrote and what the user should be told."""

    backend: str
    written: list[Path]
    notes: list[str]
    settings_path: Path
    result: Any = None  # the pipeline's result dataclass


def _progress(on_stage: Stage | None, on_frames: Frames | None, name: str) -> Callable[[int, int], None]:
    """A pipeline's (done, total) progress as a stage of the job."""
    last = [None]

    def report(done: int, total: int) -> None:
        if last[0] is None:
            if on_stage:
                on_stage(name, total)
            last[0] = 0
        if on_frames:
            on_frames(done - last[0])
        last[0] = done

    return report


class _Task:
    """The steps every task shares: resolve, configure, load, call, describe."""

    def __init__(self, task: str, options: TaskOptions) -> None:
        from studio.registry import resolve

        self.task, self.options = task, options
        self.cls, reason = resolve(task, options.backend, options.weights)
        self.config = make_config(self.cls, options.settings)
        self.notes = [f"backend: {self.cls.name} ({reason})"]
        self.pipe = None

    def load(self) -> Any:
        from studio.registry import weights_root

        with pipeline_errors(self.cls.name):
            self.pipe = self.cls.load(weights_root(self.options.weights), self.config)
        return self.pipe

    def call(self, request: Any) -> Any:
        check_request(self.cls, request)
        if self.pipe is None:
            self.load()
        with pipeline_errors(self.cls.name):
            result = getattr(self.pipe, self.task)(request)
        self.notes += take_notes(self.pipe)
        return result

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()

    def settings(self, **extra) -> dict:
        return {"task": self.task, "backend": self.cls.name, "options": dataclasses.asdict(self.options), "settings": config_dict(self.config), **extra}


def fit_photo(path: Path, body_model: BodyModel, *, person: int | None = None, on_keypoints=None):
    """A photo read and its person fitted (with hands, face and the person mask): (image, PoseResult,
    notes). Errors name the photo."""
    from studio.capture import pose_image
    from studio.fit.focal import exif_focal_length
    from studio.pose import load_estimator

    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        raise StudioError(f"{path}: a reference must be an image ({', '.join(IMAGE_SUFFIXES)})")
    image = read_image(path)
    try:
        ref = pose_image(
            image, body_model=body_model, estimator=load_estimator(hands=True, face=True), person=person, on_keypoints=on_keypoints,
            exif_focal=exif_focal_length(path, image.shape[:2]),
        )  # fmt: skip
    except StudioError as exc:
        raise StudioError(f"{path}: {exc}") from exc
    notes = []
    if ref.num_people > 1:
        notes.append(f"{ref.num_people} people in {Path(path).name}; using person {ref.person} (0 = the largest; choose with --person)")
    return image, ref, notes


def _suffix(path: Path, suffixes: Sequence[str], what: str) -> Path:
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise StudioError(f"{path}: {what} must end in {', '.join(suffixes)}")
    return path


# --- avatar ----------------------------------------------------------------------------------------


def run_avatar(
    reference: str | Path,
    output: str | Path,
    *,
    options: TaskOptions,
    body_model: BodyModel,
    person: int | None = None,
    preview: str | Path | None = None,
    on_stage: Stage | None = None,
    on_frames: Frames | None = None,
) -> TaskOutput:
    """A 3D avatar of the person in ``reference`` written to ``output`` (its format is the pipeline's:
    ``output_suffixes``), and optionally a preview video (an orbit)."""
    reference, output = Path(reference), Path(output)
    job = _Task("avatar", options)
    _suffix(output, getattr(job.cls, "output_suffixes", (".ply",)), "the avatar")
    if preview is not None:
        _suffix(Path(preview), VIDEO_OUTPUT_SUFFIXES, "--preview")
    settings_file = settings_path(output)
    with Publication({"-o": output, "--preview": preview, "the settings file": settings_file}, inputs={"REFERENCE": reference}):
        try:
            if on_stage:
                on_stage("fitting the reference", 1)
            image, ref, notes = fit_photo(reference, body_model, person=person)
            job.notes += notes
            request = AvatarRequest(
                reference=image, reference_mask=ref.keypoints.mask[0], reference_condition=ref.condition, body_model=body_model,
                output=output, seed=options.seed, on_progress=_progress(on_stage, on_frames, f"building the avatar ({job.cls.name})"),
            )  # fmt: skip
            result = job.call(request)
        finally:
            job.close()
        written = [output]
        if preview is not None:
            if result.preview is None:
                raise StudioError(f"the {job.cls.name} pipeline makes no preview; leave out --preview")
            _write_video(Path(preview), result.preview, fps=30.0)
            written.append(Path(preview))
        write_settings(settings_file, job.settings(reference=str(reference), person=ref.person, notes=job.notes))
    return TaskOutput(job.cls.name, written, job.notes, settings_file, result)


def _write_video(path: Path, frames: np.ndarray, *, fps: float) -> None:
    with VideoWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)


# --- image -----------------------------------------------------------------------------------------


def image_size_for(pose, size: int) -> tuple[tuple[int, int], list[str]]:
    """The (height, width) of a generated image: the pose camera's aspect (square without a pose), the
    longer side ``size``, both sides multiples of 64 (rounded, and said)."""
    notes = []
    h, w = output_size(pose.camera.image_size, size) if pose is not None else (size, size)
    rounded = max(64, round(h / 64) * 64), max(64, round(w / 64) * 64)
    if rounded != (h, w):
        notes.append(f"the size {h}x{w} is rounded to {rounded[0]}x{rounded[1]} (multiples of 64)")
    return rounded, notes


def run_image(
    output: str | Path,
    *,
    prompt: str | None,
    pose: str | Path | None,
    options: TaskOptions,
    frame: int | None = None,
    size: int = 512,
    negative_prompt: str | None = None,
    maps_out: str | Path | None = None,
    on_stage: Stage | None = None,
    on_frames: Frames | None = None,
) -> TaskOutput:
    """One image from a prompt and/or a pose (a motion .npz from ``studio pose``, ``studio motion
    import`` or ``studio hoi``; ``frame`` picks one of several), written to ``output``; ``maps_out``
    also gets the guidance maps of the pose and any maps the pipeline makes, as PNGs."""
    from studio.condition import HumanCondition

    output = _suffix(Path(output), (".png", ".jpg", ".jpeg", ".webp"), "the image")
    prompt = (prompt or "").strip() or None
    job = _Task("image", options)
    condition = None
    if pose is not None:
        condition = HumanCondition.load(pose)
        if frame is None and condition.num_frames > 1:
            raise StudioError(f"{pose} has {condition.num_frames} frames; choose one with --frame 0..{condition.num_frames - 1}")
        index = frame or 0
        if not 0 <= index < condition.num_frames:
            raise StudioError(f"--frame {index}: {pose} has frames 0..{condition.num_frames - 1}")
        condition = condition[index]
    if prompt is None and condition is None:
        raise StudioError("give a prompt (--prompt) and/or a pose (--pose motion.npz)")
    if prompt is None:
        job.notes.append("no prompt: the image follows the pose only")
    (h, w), notes = image_size_for(condition, size)
    job.notes += notes
    body_model = None
    if condition is not None:
        from studio.body import load_body_model

        body_model = load_body_model(condition.body_model)
        condition = dataclasses.replace(condition, camera=condition.camera.resized((h, w)))
    settings_file = settings_path(output)
    folders = ("--maps-out",) if maps_out is not None else ()
    with Publication({"-o": output, "--maps-out": maps_out, "the settings file": settings_file}, inputs={"--pose": pose}, folders=folders):
        request = ImageRequest(
            prompt=prompt, pose=condition, size=(h, w), body_model=body_model, negative_prompt=negative_prompt, seed=options.seed,
            on_progress=_progress(on_stage, on_frames, f"generating ({job.cls.name})"),
        )  # fmt: skip
        try:
            result = job.call(request)
        finally:
            job.close()
        write_image(output, result.image)
        written = [output]
        if maps_out is not None:
            maps = dict(result.maps)
            if condition is not None:
                guidance = condition.render(("depth", "normal", "semantic", "skeleton"), body_model=body_model)
                maps.update({f"pose_{k}": v[0] for k, v in guidance.items()})
            for name, array in maps.items():
                written.append(write_image(Path(maps_out) / f"{name}.png", np.asarray(array)))
        write_settings(settings_file, job.settings(prompt=prompt, pose=None if pose is None else str(pose), frame=frame, size=[h, w], notes=job.notes))
    return TaskOutput(job.cls.name, written, job.notes, settings_file, result)


# --- novel view ------------------------------------------------------------------------------------


def orbit_target(reference, body_model: BodyModel, *, num_frames: int, size: tuple[int, int]):
    """The reference's body, still, seen from ``num_frames`` cameras on a circle around it at the
    reference camera's distance and height: a HumanCondition of ``num_frames`` frames."""
    import torch

    from studio.camera import camera_to_world

    joints = reference.posed(body_model).joints  # [1, J, 3] world
    centre = joints[0, 0]
    E = reference.camera.extrinsics
    eye = camera_to_world(torch.zeros(1, 1, 3), E)[0, 0]
    offset = eye - centre
    radius = float(offset.norm())
    elevation = float(torch.asin((offset[1] / max(radius, 1e-6)).clamp(-1, 1)))
    azimuth = float(torch.atan2(offset[0], offset[2]))
    focal = float(reference.camera.resized(size).K[0, 0, 0])
    camera = orbit_cameras(centre.tolist(), radius=radius, image_size=size, num_frames=num_frames, elevation=elevation, start_azimuth=azimuth, focal=focal)
    body = {k: v.expand(num_frames, -1).clone() for k, v in reference.body.items()}
    return dataclasses.replace(reference, body=body, camera=camera)


def _body_model_for_weights(job: _Task, body_model: BodyModel) -> BodyModel:
    """The body model to fit the photos with: the one the pipeline's weights were trained on when the
    pipeline says so (its optional ``body_model_for(root, config)``: the released SHERF and TransHuman
    weights need SMPL), else ``body_model``. Loading it names its files (STUDIO_SMPL_DIR) when missing."""
    from studio.registry import weights_root

    wanted = getattr(job.cls, "body_model_for", None)
    name = wanted(weights_root(job.options.weights), job.config) if wanted is not None else body_model.name
    if name == body_model.name:
        return body_model
    from studio.body import load_body_model

    job.notes.append(f"body model: {name} (the {job.cls.name} weights were trained on it)")
    return load_body_model(name)


def run_novel_view(
    references: Sequence[str | Path],
    output: str | Path,
    *,
    options: TaskOptions,
    body_model: BodyModel,
    motion: str | Path | None = None,
    orbit: int = 60,
    size: int = 512,
    person: int | None = None,
    on_stage: Stage | None = None,
    on_frames: Frames | None = None,
) -> TaskOutput:
    """The person of one or more photos rendered on an orbit (``orbit`` frames around the first
    photo's body) or performing ``motion``, into the video ``output``."""
    from studio import validate
    from studio.animate.transfer import transfer_motion
    from studio.motion.loader import load_motion

    output = _suffix(Path(output), VIDEO_OUTPUT_SUFFIXES, "the output")
    refs = [Path(r) for r in references]
    if not refs:
        raise StudioError("give at least one reference photo")
    orbit = validate.integer(orbit, name="--orbit", low=1, high=3600)
    job = _Task("novel_view", options)
    body_model = _body_model_for_weights(job, body_model)
    settings_file = settings_path(output)
    inputs = {f"REFERENCE {i + 1}": r for i, r in enumerate(refs)} | {"--motion": motion}
    with Publication({"-o": output, "the settings file": settings_file}, inputs=inputs):
        images, masks, conditions = [], [], []
        for i, path in enumerate(refs):
            if on_stage:
                on_stage(f"fitting reference {i + 1} of {len(refs)}", 1)
            image, ref, notes = fit_photo(path, body_model, person=person)
            job.notes += notes
            images.append(image)
            masks.append(ref.keypoints.mask[0])
            conditions.append(ref.condition)
        frame_size = output_size(conditions[0].camera.image_size, size)
        if motion is not None:
            motion_cond, _ = load_motion(motion, body_model, on_frames=on_frames)
            target, _ = transfer_motion(motion_cond, conditions[0], motion_model=body_model, reference_model=body_model, image_size=frame_size)
        else:
            target = orbit_target(conditions[0], body_model, num_frames=orbit, size=frame_size)
        request = NovelViewRequest(
            references=images, reference_masks=masks, reference_conditions=conditions, target=target, size=frame_size,
            body_model=body_model, seed=options.seed, on_progress=_progress(on_stage, on_frames, f"rendering ({job.cls.name})"),
        )  # fmt: skip
        try:
            result = job.call(request)
        finally:
            job.close()
        _write_video(output, result.frames, fps=target.fps if motion is not None else 30.0)
        write_settings(settings_file, job.settings(references=[str(r) for r in refs], motion=None if motion is None else str(motion), orbit=orbit, size=list(frame_size), notes=job.notes))
    return TaskOutput(job.cls.name, [output], job.notes, settings_file, result)


# --- human-object interaction ----------------------------------------------------------------------


def run_hoi(
    prompt: str,
    output: str | Path,
    *,
    options: TaskOptions,
    body_model: BodyModel,
    object: str | Path | None = None,
    image: str | Path | None = None,
    condition: str | Path | None = None,
    on_stage: Stage | None = None,
    on_frames: Frames | None = None,
) -> TaskOutput:
    """A human and an object interacting as ``prompt`` says: the scene (human and object as separate
    named meshes) to ``output``, optionally a rendered image and the human's HumanCondition .npz; the
    contacts and penetration achieved go into the settings file beside the scene."""
    output = _suffix(Path(output), SCENE_SUFFIXES, "the scene")
    if image is not None:
        _suffix(Path(image), IMAGE_SUFFIXES, "--image")
    if condition is not None:
        _suffix(Path(condition), (".npz",), "--condition")
    if not (prompt or "").strip():
        raise StudioError("the prompt is empty; describe a person and an object, e.g. \"a person sitting on a stool\"")
    job = _Task("hoi", options)
    settings_file = settings_path(output)
    object_input = Path(object) if object is not None and Path(object).suffix else None
    outputs = {"-o": output, "--image": image, "--condition": condition, "the settings file": settings_file}
    with Publication(outputs, inputs={"--object": object_input}):
        request = HoiRequest(prompt=prompt.strip(), object=object, body_model=body_model, seed=options.seed, on_progress=_progress(on_stage, on_frames, f"composing ({job.cls.name})"))
        try:
            result = job.call(request)
        finally:
            job.close()
        from studio.outputs import atomic_path

        with atomic_path(output) as tmp:
            result.scene.export(tmp, file_type=output.suffix[1:].lower())
        written = [output]
        if image is not None:
            if result.image is None:
                raise StudioError(f"the {job.cls.name} pipeline renders no image; leave out --image")
            written.append(write_image(image, result.image))
        if condition is not None:
            written.append(result.condition.save(condition, body_model=body_model))
        if result.report.get("summary"):
            job.notes.append(str(result.report["summary"]))
        write_settings(settings_file, job.settings(prompt=prompt, object=None if object is None else str(object), report=result.report, notes=job.notes))
    return TaskOutput(job.cls.name, written, job.notes, settings_file, result)


__all__ = ["TaskOptions", "TaskOutput", "fit_photo", "image_size_for", "orbit_target", "run_avatar", "run_hoi", "run_image", "run_novel_view"]
