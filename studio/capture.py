"""The capture job (``studio pose``): media -> HumanCondition, estimation and fitting end to end, for
images and videos.

The camera's focal length is ``--focal`` when given, else the photo's EXIF, else estimated from the
keypoints (``studio.fit.focal``; for a video, from its first frames).

Videos stream through three overlapping stages: ffmpeg decodes (its own process, scaled down to the
estimator's working size), MediaPipe tracks the person (a worker thread), and the fitter fits chunks
of frames as they arrive (the calling thread; torch releases the GIL), so both CPU cores stay busy.
The fitted parameters then pass through a bidirectional (RTS) smoother (``studio.fit.smoothing``)
that hands frames on a few frames late; the preview is drawn from the smoothed frames.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from studio.body.base import BodyModel
from studio.condition import HumanCondition
from studio.errors import StudioError
from studio.fit.fitter import BodyFitter, FitConfig, one_torch_thread
from studio.fit.focal import FocalEstimate, estimate_focal_length, exif_focal_length
from studio.fit.smoothing import ParameterSmoother
from studio.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoReader, VideoWriter, read_image, write_image
from studio.pose import Keypoints, PoseEstimator, fill_gaps, load_estimator

logger = logging.getLogger(__name__)

WORKING_SIDE = 960  # longer side of the frames the estimator sees (MediaPipe works at 256 px inside)
PREVIEW_ALPHA = 0.65
STREAM_MIN_CHUNK = 16  # video frames the fitter takes at least (fewer only at the end): a step costs nearly the same for 8 frames as for 32
STREAM_MAX_CHUNK = 48


@dataclasses.dataclass
class PoseResult:
    """What ``pose_image``/``pose_video`` found."""

    condition: HumanCondition  # in pixels of the full-size input
    keypoints: Keypoints  # the estimator's detections, full-size pixels, gaps filled
    missing_frames: int  # frames in which nobody was found
    num_people: int  # people in view when the person to follow was chosen
    person: int  # which of them was followed (0 = largest)
    focal: FocalEstimate | None = None  # the camera's focal length and where it came from
    notes: tuple[str, ...] = ()  # what the user should be told (how the person was found, ...)


def resolve_focal(config: FitConfig, keypoints: Keypoints, *, exif: float | None = None) -> tuple[FitConfig, FocalEstimate]:
    """The fit's settings with a focal length: the one given, else ``exif`` (from the photo), else
    one estimated from the keypoints (``studio.fit.focal``), else the default when the search is off."""
    from studio.camera import default_focal_length

    if config.focal_length is not None:
        estimate = FocalEstimate(float(config.focal_length), "given")
    elif exif is not None:
        estimate = FocalEstimate(float(exif), "exif", "from the photo's EXIF")
    elif config.focal_search:
        estimate = estimate_focal_length(keypoints)
    else:
        estimate = FocalEstimate(default_focal_length(keypoints.image_size), "default", "the image's longer side")
    return dataclasses.replace(config, focal_length=estimate.focal), estimate


def overlay(frame: np.ndarray, normal: np.ndarray, mask: np.ndarray, *, alpha: float = PREVIEW_ALPHA) -> np.ndarray:
    """The fitted body's normal map blended over a frame where its mask is set: [H, W, 3] uint8."""
    a = mask.astype(np.float32)[..., None] * (alpha / 255.0)
    return (frame * (1.0 - a) + normal * a).astype(np.uint8)


def pose_image(
    image: np.ndarray,
    *,
    body_model: BodyModel,
    estimator: PoseEstimator | None = None,
    config: FitConfig | None = None,
    person: int | None = None,
    on_keypoints: Callable[[Keypoints], None] | None = None,
    exif_focal: float | None = None,
) -> PoseResult:
    """Fit the body model to one person in an RGB image [H, W, 3] uint8 (T=1).

    Args:
        on_keypoints: called with the detections (and person mask) before the fit starts, so that
            work needing only them can run alongside the fit.
        exif_focal: the focal length the photo's EXIF gives (``exif_focal_length``), used unless the
            config has one.
    """
    estimator = estimator or load_estimator(hands=True, face=True)
    kp = estimator.estimate_image(image, person=person, mask=True)
    if on_keypoints is not None:
        on_keypoints(kp)
    config, focal = resolve_focal(config or FitConfig(), kp, exif=exif_focal)
    condition = BodyFitter(body_model, config).fit(kp)
    return PoseResult(condition, kp, 0, kp.num_people, estimator.person if kp.num_people > 1 else 0, focal, kp.notes)


def pose_video(
    path: str | Path,
    *,
    body_model: BodyModel,
    estimator: PoseEstimator | None = None,
    config: FitConfig | None = None,
    person: int | None = None,
    preview: str | Path | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> PoseResult:
    """Track and fit one person through a video.

    Args:
        path: the video file.
        preview: optionally, an .mp4 to write with the fitted body over the (scaled) input.
        on_frames: called with the number of frames each time a chunk is fitted (progress).
    """
    config = config or FitConfig()
    estimator = estimator or load_estimator()
    reader = VideoReader(path, max_side=WORKING_SIDE)
    info, work_size = reader.info, reader.size
    max_gap = max(1, round(config.max_gap_seconds * info.fps))
    fitter = BodyFitter(body_model, config)
    items: queue.Queue = queue.Queue(maxsize=4 * STREAM_MAX_CHUNK)
    stop = threading.Event()
    keep_frames = preview is not None

    def produce() -> None:
        try:
            for frame, kp in _with_frames(iter(reader), estimator, fps=info.fps, person=person):
                if stop.is_set():
                    return
                items.put((frame if keep_frames else None, kp.scaled(info.size)))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put(exc)
        finally:
            items.put(None)

    worker = threading.Thread(target=produce, name="studio-pose-estimation", daemon=True)
    worker.start()

    def stream() -> Iterator[tuple[list, Keypoints]]:
        """Chunks of whatever the estimator has finished when the fitter is ready: at least
        STREAM_MIN_CHUNK frames (unless the video ends), at most STREAM_MAX_CHUNK, so the fitter
        never idles waiting for a full chunk and little work is left when the video ends."""
        done = False
        while not done:
            frames, kps = [], []
            while not done and len(kps) < STREAM_MAX_CHUNK:
                try:
                    item = items.get() if len(kps) < STREAM_MIN_CHUNK else items.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                elif isinstance(item, BaseException):
                    raise item
                else:
                    frames.append(item[0])
                    kps.append(item[1])
            if kps:
                yield frames, Keypoints.concat(kps)

    def shut_down() -> None:
        stop.set()
        while worker.is_alive():  # unblock the producer if it waits on a full queue
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass

    conditions: list[HumanCondition] = []
    keypoints: list[Keypoints] = []
    smoother = ParameterSmoother(info.fps) if config.smoothing else None
    focal: FocalEstimate | None = None
    with contextlib.ExitStack() as stack:  # on any exit: producer stopped, partial preview removed
        stack.callback(shut_down)
        # The fit's tensors are small: one torch thread is faster, and leaves a core to MediaPipe.
        stack.enter_context(one_torch_thread())
        preview_out = _PreviewWriter(stack, preview, info.fps, work_size, body_model) if preview is not None else None

        def publish(cond: HumanCondition | None) -> None:
            if cond is not None:
                conditions.append(cond)
                if preview_out is not None:
                    preview_out.write(cond)

        for frames, kp in _filled(stream(), max_gap):
            if focal is None:  # the camera is fixed by the first frames seen
                fitter.config, focal = resolve_focal(config, kp)
            cond = fitter.fit_chunk(kp)
            keypoints.append(kp)
            if preview_out is not None:
                preview_out.frames.extend(frames)
            publish(smoother.push(cond, frame_weights(kp)) if smoother is not None else cond)
            if on_frames is not None:
                on_frames(len(kp))
        if smoother is not None:
            publish(smoother.finish())
        if not conditions:
            raise StudioError(f"{path}: the video has no frames")
        all_kp = Keypoints.concat(keypoints)
        missing = int((~all_kp.present).sum())
        if missing == len(all_kp):
            raise StudioError(f"{path}: no person found in any of its {len(all_kp)} frames")
    notes = tuple(getattr(estimator, "notes", ()))
    return PoseResult(HumanCondition.concat(conditions), all_kp, missing, estimator.num_people, estimator.person, focal, notes)


class _PreviewWriter:
    """The fitted body drawn over the video's frames as (smoothed) conditions arrive; frames wait in
    ``frames`` until their condition comes."""

    def __init__(self, stack: contextlib.ExitStack, path: str | Path, fps: float, size: tuple[int, int], body_model: BodyModel) -> None:
        from studio.render import GuidanceRenderer

        self.writer = stack.enter_context(VideoWriter(path, fps=fps))
        self.renderer = GuidanceRenderer(body_model.faces, body_model.part_labels, image_size=size, maps=("normal", "mask"))
        stack.callback(self.renderer.release)
        self.body_model = body_model
        self.frames: collections.deque = collections.deque()

    def write(self, cond: HumanCondition) -> None:
        frames = [self.frames.popleft() for _ in range(cond.num_frames)]
        source = lambda part, c=cond: _vertices_and_joints(c, self.body_model, part)  # noqa: E731
        for maps in self.renderer.iter_render(source, cond.camera, chunk_size=len(frames)):
            for t, frame in enumerate(frames):
                self.writer.write(overlay(frame, maps["normal"][t], maps["mask"][t]))


def frame_weights(kp: Keypoints) -> np.ndarray:
    """How much each frame's fit is worth to the smoother [T]: the mean confidence of the body's
    keypoints, near zero where nobody was detected (held or interpolated frames)."""
    from studio.pose.mediapipe_estimator import BODY_JOINTS
    from studio.body.joints import JOINT_INDEX

    ids = [JOINT_INDEX[n] for n in BODY_JOINTS]
    weights = np.clip(kp.confidence[:, ids].mean(1), 0.02, 1.0)
    return np.where(kp.present, weights, 0.02)


def _vertices_and_joints(cond: HumanCondition, body_model: BodyModel, frames: slice) -> tuple[torch.Tensor, torch.Tensor]:
    out = cond.posed(body_model, frames=frames)
    return out.vertices, out.joints


def _with_frames(frames: Iterator[np.ndarray], estimator: PoseEstimator, *, fps: float, person: int | None):
    """Pairs (frame, keypoints) from the estimator's tracking of ``frames``."""
    held: list[np.ndarray] = []

    def remember() -> Iterator[np.ndarray]:
        for frame in frames:
            held.append(frame)
            yield frame

    for kp in estimator.estimate_video(remember(), fps=fps, person=person):
        yield held.pop(0), kp


def _filled(chunks: Iterator[tuple[list, Keypoints]], max_gap: int) -> Iterator[tuple[list, Keypoints]]:
    """Fill missing frames chunk by chunk (``fill_gaps``). A chunk that ends inside a gap waits for
    the next chunk, and chunks wait until somebody has been seen, so gaps across chunk borders are
    filled like any other."""
    context: Keypoints | None = None  # the last filled frames, for gaps that began earlier
    pending: list[tuple[list, Keypoints]] = []

    def release(count: int, upcoming: Keypoints | None) -> Iterator[tuple[list, Keypoints]]:
        nonlocal context
        ready = pending[:count]
        del pending[:count]
        parts = ([context] if context is not None else []) + [kp for _, kp in ready]
        if upcoming is not None:
            parts.append(upcoming[: max_gap + 1])
        filled, _ = fill_gaps(Keypoints.concat(parts), max_gap=max_gap)
        start = len(context) if context is not None else 0
        for frames, kp in ready:
            out = filled[start : start + len(kp)]
            out.mask = None
            start += len(kp)
            context = out[-(max_gap + 1) :]
            yield frames, out

    for frames, kp in chunks:
        pending.append((frames, kp))
        if context is None and not any(k.present.any() for _, k in pending):
            continue  # nobody seen yet
        if kp.present[-1]:  # no gap open at the end: release everything
            yield from release(len(pending), None)
        elif len(pending) > 1:  # the newest chunk closes (or continues) the older ones' gap
            yield from release(len(pending) - 1, kp)
    if pending:
        yield from release(len(pending), None)


def pose_file(
    path: str | Path,
    *,
    body_model: BodyModel,
    config: FitConfig | None = None,
    person: int | None = None,
    hands: bool | None = None,
    preview: str | Path | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> PoseResult:
    """``pose_image`` or ``pose_video`` by the file's suffix. ``hands`` defaults to on for images
    and off for videos (tracking hands costs about half again as much time per frame)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if preview is not None and Path(preview).suffix.lower() not in IMAGE_SUFFIXES:
            raise StudioError(f"{preview}: the preview of an image is an image ({', '.join(IMAGE_SUFFIXES)})")
        image = read_image(path)
        estimator = load_estimator(hands=True if hands is None else hands, face=True if hands is None else hands)
        try:
            result = pose_image(image, body_model=body_model, estimator=estimator, config=config, person=person, exif_focal=exif_focal_length(path, image.shape[:2]))
        finally:
            estimator.close()  # its MediaPipe graphs and their threads go now, not at interpreter exit
        if preview is not None:
            maps = result.condition.render(("normal", "mask"), body_model=body_model)
            write_image(preview, overlay(image, maps["normal"][0], maps["mask"][0]))
        if on_frames is not None:
            on_frames(1)
        return result
    if suffix in VIDEO_SUFFIXES:
        if preview is not None and Path(preview).suffix.lower() not in VIDEO_SUFFIXES:
            raise StudioError(f"{preview}: the preview of a video is a video ({', '.join(VIDEO_SUFFIXES)})")
        estimator = load_estimator(hands=bool(hands), face=bool(hands))
        try:
            return pose_video(path, body_model=body_model, estimator=estimator, config=config, person=person, preview=preview, on_frames=on_frames)
        finally:
            estimator.close()
    raise StudioError(
        f"{path}: unsupported input '{suffix or '(no suffix)'}'; give an image ({', '.join(IMAGE_SUFFIXES)}) "
        f"or a video ({', '.join(VIDEO_SUFFIXES)})"
    )


def pose_job(
    media: str | Path,
    output: str | Path,
    *,
    body_model: BodyModel,
    config: FitConfig | None = None,
    person: int | None = None,
    hands: bool | None = None,
    preview: str | Path | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> PoseResult:
    """``studio pose`` as a job: fit ``media`` (``pose_file``) and publish the motion ``output`` (.npz),
    the optional preview and the resolved settings (``OUT.json``) together, or nothing on failure."""
    from studio.jobs import settings_path, write_settings
    from studio.outputs import Publication

    media, output = Path(media), Path(output)
    if not media.is_file():
        raise StudioError(f"{media}: no such file")
    config = config or FitConfig()
    settings_file = settings_path(output)
    with Publication({"-o": output, "--preview": preview, "the settings file": settings_file}, inputs={"INPUT": media}):
        result = pose_file(media, body_model=body_model, config=config, person=person, hands=hands, preview=preview, on_frames=on_frames)
        result.condition.save(output, body_model=body_model)
        focal = result.focal
        write_settings(settings_file, {
            "input": str(media), "body_model": body_model.name, "person": result.person, "people_in_view": result.num_people, "hands": hands,
            "focal_px": float(result.condition.camera.K[0, 0, 0]), "focal_given": config.focal_length,
            "focal_source": focal.source if focal is not None else None, "frames": result.condition.num_frames,
            "fps": result.condition.fps, "frames_without_person": result.missing_frames, "smoothing": config.smoothing,
            "notes": list(result.notes), "preview": None if preview is None else str(preview),
        })  # fmt: skip
    return result


def pose_notes(result: PoseResult) -> list[str]:
    """What ``studio pose`` tells the user about a result, one short clause each."""
    notes = list(result.notes)
    if result.focal is not None and result.focal.source != "given":
        notes.append(result.focal.describe(result.condition.camera.image_size))
    if result.num_people > 1:
        notes.append(f"{result.num_people} people in view, followed person {result.person} (choose with --person)")
    if result.missing_frames:
        notes.append(f"no person in {result.missing_frames} of {result.condition.num_frames} frames (filled)")
    return notes
