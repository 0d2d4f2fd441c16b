"""The ``studio animate`` job: the person in a reference photo performing a motion, with any registered
pipeline that has the ``animate`` task.

Steps: resolve the pipeline (``studio.registry.resolve``), fit the reference (the pipeline may start
work that needs only the photo and its person mask meanwhile, ``start``; the fit is cached per photo,
``studio.animate.cache``), read the motion and transfer it onto the reference's body and camera
(``transfer``), then call the pipeline chunk by chunk (``chunk_frames`` frames a call, or the whole
motion) through a ``ChunkStore`` so that an interrupted run resumes, encoding the video as the chunks
come, and publish the video, the side outputs and the resolved settings together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from studio.animate.cache import cache_key, load_entry, save_entry
from studio.body.base import BodyModel
from studio.camera import output_size
from studio.errors import StudioError
from studio.jobs import ChunkStore, settings_path, write_settings
from studio.media import IMAGE_SUFFIXES, VIDEO_OUTPUT_SUFFIXES, VideoReader, VideoWriter, hstack_frames, read_image
from studio.motion.loader import load_motion, motion_duration
from studio.outputs import Publication
from studio.pipeline import AnimateRequest, check_request, config_dict, make_config, pipeline_errors, take_notes


@dataclasses.dataclass
class AnimateConfig:
    """Settings of one animation (saved beside the output as JSON)."""

    backend: str = "auto"
    """A registered animate pipeline's name, or "auto": one whose weights are found and that runs at a
    practical speed here, else the embedded default."""
    size: int = 512
    """Longer side of the output in pixels (the reference image's aspect is kept)."""
    weights: str | None = None
    """Folder with pipeline weights (else $STUDIO_WEIGHTS)."""
    person: int | None = None
    """Which person of the reference to animate when several are in it (0 = largest)."""
    keep_in_view: bool = True
    """Push the body back and shorten its travel when it would leave the picture."""
    seed: int = 0
    """Seed of a stochastic pipeline's noise."""
    settings: tuple[str, ...] | dict = ()
    """The pipeline's own settings: "key=value" strings (``--set``) or a dict, checked against its Config."""


@dataclasses.dataclass
class AnimateOutput:
    """What ``animate`` wrote."""

    output: Path
    backend: str
    num_frames: int
    fps: float
    notes: list[str]  # things the user should be told (several people, legs cut off, placement)
    settings_path: Path


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
) -> AnimateOutput:
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
    settings_file = settings_path(output)
    partial = output.with_name(output.name + ".partial")
    outputs = {"-o": output, "--guidance-out": guidance_out, "--side-by-side": side_by_side, "the settings file": settings_file}
    # Every output is published together when all are complete; the checkpoint folder goes after that.
    from studio.fit.fitter import one_torch_thread

    # One torch thread: the job's tensors are small, and torch's worker threads spin against each
    # other and against the renderer's and the encoder's (several times slower on a busy machine).
    with Publication(outputs, inputs={"REFERENCE": reference, "MOTION": motion, "the checkpoint folder": partial}), one_torch_thread():
        result, store = _animate(
            reference, motion, output, config=config, body_model=body_model, resume=resume, guidance_out=guidance_out,
            side_by_side=side_by_side, on_stage=on_stage or (lambda name, total: None), on_frames=on_frames or (lambda n: None),
            settings_file=settings_file,
        )  # fmt: skip
    store.remove()
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
    on_stage: Callable[[str, int], None],
    on_frames: Callable[[int], None],
    settings_file: Path,
) -> tuple[AnimateOutput, ChunkStore]:
    from studio.registry import resolve, weights_root

    cls, reason = resolve("animate", config.backend, config.weights)
    pipe_config = make_config(cls, config.settings)
    motion_duration(motion)  # a motion that cannot be read is refused now, before the reference is fitted
    job = _Job(cls, pipe_config, reference, motion, config=config, body_model=body_model, on_stage=on_stage, on_frames=on_frames)
    job.notes.append(f"backend: {cls.name} ({reason})")
    with pipeline_errors(cls.name):
        job.pipe = cls.load(weights_root(config.weights), pipe_config)
    try:
        job.fit_reference()
        job.transfer()
        # The video is encoded (by ffmpeg, in its own process) while the frames are rendered.
        with VideoWriter(output, fps=job.cond.fps) as writer:
            store = job.render(output, resume=resume, writer=writer)
        job.notes += take_notes(job.pipe)
        job.write(output, store, guidance_out=guidance_out, side_by_side=side_by_side, settings_file=settings_file)
    finally:
        job.pipe.close()
    return AnimateOutput(output, cls.name, job.cond.num_frames, job.cond.fps, job.notes, settings_file), store


class _Job:
    """One animation's state as it moves through the steps."""

    def __init__(self, cls, pipe_config, reference: Path, motion: Path, *, config: AnimateConfig, body_model: BodyModel, on_stage, on_frames) -> None:
        self.cls, self.pipe_config, self.reference, self.motion = cls, pipe_config, reference, motion
        self.config, self.body_model, self.on_stage, self.on_frames = config, body_model, on_stage, on_frames
        self.notes: list[str] = []
        self.image = read_image(reference)
        self.size = output_size(self.image.shape[:2], config.size)
        self.pipe = None

    def fit_reference(self) -> None:
        """One person, fitted with hands and face, with a person mask. Work that needs only the photo
        and the mask (an inpainted background, say) starts as soon as the mask is known. The fit is
        cached per photo (``studio.animate.cache``): animating the same photo again reuses it."""
        from studio.capture import pose_image
        from studio.fit.focal import exif_focal_length
        from studio.pose import load_estimator

        self.on_stage("fitting the reference", 1)

        def early(kp) -> None:
            self.pipe.start(self._request(reference_mask=kp.mask[0]))

        key = cache_key("reference", self.reference.read_bytes(), self.config.person, self.body_model.name, _fit_settings())
        ref = _reference_from_cache(load_entry(key), self.body_model)
        if ref is not None:
            early(ref.keypoints)
            self.notes.append("the reference's fit came from the cache (the same photo was animated before)")
        else:
            try:
                exif = exif_focal_length(self.reference, self.image.shape[:2])
                ref = pose_image(
                    self.image, body_model=self.body_model, estimator=load_estimator(hands=True, face=True), person=self.config.person,
                    on_keypoints=early, exif_focal=exif,
                )  # fmt: skip
            except StudioError as exc:
                raise StudioError(f"{self.reference}: {exc}") from exc
            save_entry(key, _reference_to_cache(ref))
        if ref.num_people > 1:
            self.notes.append(f"{ref.num_people} people in the reference; animating person {ref.person} (choose with --person)")
        self.notes += [f"reference: {note}" for note in ref.notes]
        if not _legs_seen(ref, self.image.shape[:2]):
            self.notes.append("the reference's legs are not fully visible (full-body references work best)")
        self.ref = ref
        self.on_frames(1)

    def transfer(self) -> None:
        """The motion on the reference's body, in the output camera."""
        import torch

        from studio.animate.transfer import transfer_motion

        self.on_stage("reading the motion", 0)
        self.motion_cond, self.kind = load_motion(self.motion, self.body_model, on_frames=self.on_frames)
        self.motion_model = self.body_model if self.motion_cond.body_model == self.body_model.name else _load_model(self.motion_cond.body_model)
        frame = frame_of_video(self.image, self.motion) if self.kind == "video" else None
        if frame is not None and frame < self.motion_cond.num_frames:
            from studio.animate.camera_motion import video_camera_turns
            from studio.animate.transfer import reenact_motion

            turns = video_camera_turns(self.motion, self.motion_cond, reference_frame=frame, body_model=self.motion_model)
            self.cond = reenact_motion(
                self.motion_cond, self.ref.condition, frame=frame, motion_model=self.motion_model, reference_model=self.body_model,
                image_size=self.size, camera_turns=torch.from_numpy(turns).float(),
            )  # fmt: skip
            self.placement = {"depth_factor": 1.0, "path_factor": 1.0, "reenact_frame": frame}
            self.notes.append(f"the reference is frame {frame} of the motion video: its own camera and placement are kept (self-reenactment)")
            return
        self.cond, self.placement = transfer_motion(
            self.motion_cond, self.ref.condition, motion_model=self.motion_model, reference_model=self.body_model, image_size=self.size,
            keep_in_view=self.config.keep_in_view,
        )  # fmt: skip
        depth, path = self.placement["depth_factor"], self.placement["path_factor"]
        if path < 1.0 or depth > 1.0:
            kept = f" and kept {path:.0%} of their travel" if path < 1.0 else ""
            self.notes.append(f"to keep the person in view, moved them {depth:.2f}x as far from the camera{kept}")

    def _request(self, **fields) -> AnimateRequest:
        base = dict(reference=self.image, reference_mask=None, reference_condition=None, motion=None, size=self.size, body_model=self.body_model, seed=self.config.seed)
        return AnimateRequest(**{**base, **fields})

    def render(self, output: Path, *, resume: bool, writer: VideoWriter) -> ChunkStore:
        """Call the pipeline chunk by chunk through a ChunkStore; finished chunks are kept for --resume.
        Pipelines whose windows span the video (``chunk_frames`` None) take it whole and checkpoint
        inside the call, in the store's folder. Every chunk's frames go to ``writer`` in order as soon
        as they are there (a resumed run's finished chunks first)."""
        cls, cond = self.cls, self.cond
        settings = {
            "reference": str(self.reference), "motion": str(self.motion), "motion_kind": self.kind, "backend": cls.name,
            "config": {**dataclasses.asdict(self.config), "settings": config_dict(self.pipe_config)},
            "output_size": list(self.size), "fps": cond.fps, "body_model": self.body_model.name, "placement": self.placement,
        }  # fmt: skip
        store = ChunkStore(output, settings, inputs=(self.reference, self.motion), resume=resume)
        self.notes += store.notes
        self.settings = {**store.settings, "frames": cond.num_frames}
        step = getattr(cls, "chunk_frames", None) or cond.num_frames
        self.chunks = [(s, min(s + step, cond.num_frames)) for s in range(0, cond.num_frames, step)]
        done = [i for i in range(len(self.chunks)) if store.done(i)]
        if done:
            self.notes.append(f"resumed: {len(done)} of {len(self.chunks)} chunks were already rendered")
        self.on_stage(f"animating ({cls.name})", cond.num_frames)
        if done:
            self.on_frames(sum(self.chunks[i][1] - self.chunks[i][0] for i in done))
        for i, (a, b) in enumerate(self.chunks):
            if store.done(i):
                for frame in store.load(i):
                    writer.write(frame)
                continue
            progress = _Progress(self.on_stage, self.on_frames, cls.name) if step == cond.num_frames and b - a > 1 else None
            request = self._request(
                reference_mask=self.ref.keypoints.mask[0], reference_condition=self.ref.condition, motion=cond[a:b],
                frame_offset=a, total_frames=cond.num_frames, checkpoint_dir=store.folder, on_progress=progress,
            )  # fmt: skip
            check_request(cls, request)
            with pipeline_errors(cls.name):
                frames = np.asarray(self.pipe.animate(request).frames)
            if frames.shape != (b - a, *self.size, 3) or frames.dtype != np.uint8:
                raise StudioError(f"the {cls.name} pipeline returned frames {list(frames.shape)} {frames.dtype}, expected {[b - a, *self.size, 3]} uint8")
            store.save(i, frames)
            for frame in frames:
                writer.write(frame)
            if progress is None:
                self.on_frames(b - a)
        return store

    def write(self, output: Path, store: ChunkStore, *, guidance_out, side_by_side, settings_file: Path) -> None:
        """The side outputs and the settings (the video is written by ``render``; all are published
        together by the caller)."""
        cond = self.cond
        if guidance_out is not None or side_by_side is not None:
            self.on_stage("writing the side outputs", cond.num_frames)
        if guidance_out is not None:
            from studio.render import iter_map_video_frames

            with VideoWriter(guidance_out, fps=cond.fps) as writer:
                for frame in iter_map_video_frames(cond, ("depth", "normal", "semantic", "skeleton"), body_model=self.body_model):
                    writer.write(frame)
        if side_by_side is not None:
            _write_side_by_side(side_by_side, self, store)
        write_settings(settings_file, {**self.settings, "notes": self.notes})


class _Progress:
    """A pipeline's (units done, units in all) progress, shown as its own stage."""

    def __init__(self, on_stage, on_frames, name: str) -> None:
        self.on_stage, self.on_frames, self.name, self.last = on_stage, on_frames, name, None

    def __call__(self, done: int, total: int) -> None:
        if self.last is None:  # a resumed call starts past 0
            self.on_stage(f"{self.name}", total)
            self.last = 0
        self.on_frames(done - self.last)
        self.last = done


SAME_FRAME_LEVELS = 6.0  # mean absolute difference (0-255) at 64 px under which a photo is a video's frame
SEARCH_FRAMES = 120  # frames at the start of the motion video searched for the photo (10 s at 12 fps; decoding costs)


def frame_of_video(image: np.ndarray, video: str | Path) -> int | None:
    """The index of the frame of ``video`` that ``image`` [H, W, 3] uint8 is (same aspect, nearly the
    same pixels at 64 px, so a re-encoded or JPEG-saved frame counts), or None."""
    import cv2

    from studio.media import video_info

    info = video_info(video)
    h, w = info.size
    if abs(image.shape[1] / image.shape[0] - w / h) > 0.01:
        return None
    size = (max(8, round(64 * w / max(h, w))), max(8, round(64 * h / max(h, w))))
    ref = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    best, best_diff = None, SAME_FRAME_LEVELS
    for i, frame in enumerate(VideoReader(video, max_side=256)):
        if i >= SEARCH_FRAMES:
            break
        diff = float(np.abs(cv2.resize(frame, size, interpolation=cv2.INTER_AREA).astype(np.float32) - ref).mean())
        if diff < best_diff:
            best, best_diff = i, diff
            if diff < 1.0:
                break
    return best


def _fit_settings() -> dict:
    """What the cached reference fit depends on besides the photo: the fit's settings, the estimator's
    version, the pose prior and the code that estimates and fits (a digest of its source files)."""
    import hashlib
    from importlib.metadata import version

    import studio.capture
    import studio.fit
    import studio.pose
    from studio.fit import FitConfig
    from studio.fit.prior import DEFAULT_PRIOR

    digest = hashlib.sha256()
    files = [Path(studio.capture.__file__), DEFAULT_PRIOR]
    for package in (studio.fit, studio.pose):
        files += sorted(Path(package.__file__).parent.glob("*.py"))
    for path in files:
        digest.update(path.read_bytes() if path.is_file() else b"")
    return {"fit": dataclasses.asdict(FitConfig()), "mediapipe": version("mediapipe"), "code": digest.hexdigest()[:16]}


def _reference_to_cache(ref) -> dict[str, np.ndarray]:
    """A reference's PoseResult as arrays for ``save_entry``."""
    cond, kp = ref.condition, ref.keypoints
    arrays = {f"body/{k}": v.numpy() for k, v in cond.body.items()}
    arrays.update(
        body_model=np.array(cond.body_model), camera_K=cond.camera.K.numpy(), camera_extrinsics=cond.camera.extrinsics.numpy(),
        image_size=np.array(cond.camera.image_size), fps=np.array(cond.fps), points=kp.points, confidence=kp.confidence,
        world=kp.world, world_confidence=kp.world_confidence, mask=kp.mask, num_people=np.array(ref.num_people),
        person=np.array(ref.person), notes=np.array(list(ref.notes), dtype=str), focal=np.array(ref.focal.focal),
        focal_source=np.array(ref.focal.source), focal_detail=np.array(ref.focal.detail),
    )  # fmt: skip
    return arrays


def _reference_from_cache(arrays: dict[str, np.ndarray] | None, body_model: BodyModel):
    """The PoseResult stored by ``_reference_to_cache``, or None (no entry, or one that does not fit)."""
    import torch

    from studio.camera import Camera
    from studio.capture import PoseResult
    from studio.condition import HumanCondition
    from studio.fit.focal import FocalEstimate
    from studio.pose import Keypoints

    if arrays is None or str(arrays.get("body_model")) != body_model.name:
        return None
    try:
        size = tuple(int(v) for v in arrays["image_size"])
        camera = Camera(K=torch.from_numpy(arrays["camera_K"]), extrinsics=torch.from_numpy(arrays["camera_extrinsics"]), image_size=size)
        body = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("body/")}
        cond = HumanCondition(body_model=body_model.name, body=body, camera=camera, fps=float(arrays["fps"]))
        notes = tuple(str(n) for n in arrays["notes"])
        kp = Keypoints(
            points=arrays["points"], confidence=arrays["confidence"], world=arrays["world"], world_confidence=arrays["world_confidence"],
            present=np.ones(1, bool), image_size=size, mask=arrays["mask"], num_people=int(arrays["num_people"]), notes=notes,
        )  # fmt: skip
        focal = FocalEstimate(float(arrays["focal"]), str(arrays["focal_source"]), str(arrays["focal_detail"]))
        return PoseResult(cond, kp, 0, int(arrays["num_people"]), int(arrays["person"]), focal, notes)
    except (KeyError, ValueError, StudioError):
        return None


def _legs_seen(ref, image_size: tuple[int, int]) -> bool:
    from studio.body.joints import JOINT_INDEX

    legs = [JOINT_INDEX[n] for n in ("left_ankle", "right_ankle", "left_knee", "right_knee")]
    h, w = image_size
    pts = ref.keypoints.points[0, legs]
    seen = (ref.keypoints.confidence[0, legs] > 0.5) & (pts[:, 1] < h) & (pts[:, 0] >= 0) & (pts[:, 0] < w)
    return bool(seen.all())


def _load_model(name: str) -> BodyModel:
    from studio.body import load_body_model

    return load_body_model(name)


def _write_side_by_side(path, job: _Job, store: ChunkStore) -> None:
    """reference | driving frame | guidance (normal map) | result, one row per frame."""
    import cv2

    from studio.render import iter_map_video_frames

    h, w = job.size
    ref_tile = cv2.resize(job.image, (w, h), interpolation=cv2.INTER_AREA)
    if job.kind == "video":
        frames = VideoReader(job.motion, max_side=2 * max(h, w))
        driving = (cv2.resize(f, (round(f.shape[1] * h / f.shape[0] / 2) * 2, h), interpolation=cv2.INTER_AREA) for f in frames)
    else:  # mocap: the motion as the body model shows it in its own framing
        driving = iter_map_video_frames(job.motion_cond, ("normal",), size=h, body_model=job.motion_model, labels=False)
    guidance = iter_map_video_frames(job.cond, ("normal",), body_model=job.body_model, labels=False)
    labels = ["reference", "motion", "guidance", "result"]
    with VideoWriter(path, fps=job.cond.fps) as writer:
        for i in range(len(job.chunks)):
            for frame in store.load(i):
                drive = next(driving, None)
                drive = np.zeros((h, w, 3), np.uint8) if drive is None else drive
                if drive.shape[0] != h:
                    drive = cv2.resize(drive, (round(drive.shape[1] * h / drive.shape[0] / 2) * 2, h))
                writer.write(hstack_frames([ref_tile, drive, next(guidance), frame], labels=labels))
