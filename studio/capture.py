"""The capture job (``studio pose``): media -> HumanCondition, estimation and fitting end to end, for
images and videos.

Videos stream through three overlapping stages: ffmpeg decodes (its own process, scaled down to the
estimator's working size), MediaPipe tracks the person (a worker thread), and the fitter fits chunks
of frames as they arrive (the calling thread; torch releases the GIL), so both CPU cores stay busy.
"""

from __future__ import annotations

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
from studio.fit.fitter import BodyFitter, FitConfig
from studio.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoReader, VideoWriter, read_image, write_image
from studio.pose import Keypoints, PoseEstimator, fill_gaps, load_estimator

logger = logging.getLogger(__name__)

WORKING_SIDE = 960  # longer side of the frames the estimator sees (MediaPipe works at 256 px inside)
PREVIEW_ALPHA = 0.65
STREAM_MIN_CHUNK = 8  # video frames the fitter takes at least (fewer only at the end)
STREAM_MAX_CHUNK = 32


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: fitting's tensors are small, so one thread is
    faster, and the other core stays free for work that overlaps it (tracking, inpainting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclasses.dataclass
class PoseResult:
    """What ``pose_image``/``pose_video`` found."""

    condition: HumanCondition  # in pixels of the full-size input
    keypoints: Keypoints  # the estimator's detections, full-size pixels, gaps filled
    missing_frames: int  # frames in which nobody was found
    num_people: int  # people in view when the person to follow was chosen
    person: int  # which of them was followed (0 = largest)


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
) -> PoseResult:
    """Fit the body model to one person in an RGB image [H, W, 3] uint8 (T=1).

    Args:
        on_keypoints: called with the detections (and person mask) before the fit starts, so that
            work needing only them can run alongside the fit.
    """
    estimator = estimator or load_estimator(hands=True, face=True)
    kp = estimator.estimate_image(image, person=person, mask=True)
    if on_keypoints is not None:
        on_keypoints(kp)
    with one_torch_thread():
        condition = BodyFitter(body_model, config).fit(kp)
    return PoseResult(condition, kp, 0, kp.num_people, estimator.person if kp.num_people > 1 else 0)


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
    with contextlib.ExitStack() as stack:  # on any exit: producer stopped, partial preview removed
        stack.callback(shut_down)
        # The fit's tensors are small: one torch thread is faster, and leaves a core to MediaPipe.
        stack.enter_context(one_torch_thread())
        writer = stack.enter_context(VideoWriter(preview, fps=info.fps)) if preview is not None else None
        renderer = None
        for frames, kp in _filled(stream(), max_gap):
            cond = fitter.fit_chunk(kp)
            conditions.append(cond)
            keypoints.append(kp)
            if writer is not None:
                if renderer is None:
                    from studio.render import GuidanceRenderer

                    renderer = GuidanceRenderer(body_model.faces, body_model.part_labels, image_size=work_size, maps=("normal", "mask"))
                    stack.callback(renderer.release)
                for maps in renderer.iter_render(lambda frames, c=cond: _vertices_and_joints(c, body_model, frames), cond.camera, chunk_size=len(frames)):
                    for t, frame in enumerate(frames):
                        writer.write(overlay(frame, maps["normal"][t], maps["mask"][t]))
            if on_frames is not None:
                on_frames(len(kp))
        if not conditions:
            raise StudioError(f"{path}: the video has no frames")
        all_kp = Keypoints.concat(keypoints)
        missing = int((~all_kp.present).sum())
        if missing == len(all_kp):
            raise StudioError(f"{path}: no person found in any of its {len(all_kp)} frames")
    return PoseResult(HumanCondition.concat(conditions), all_kp, missing, estimator.num_people, estimator.person)


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
        result = pose_image(image, body_model=body_model, estimator=estimator, config=config, person=person)
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
        return pose_video(path, body_model=body_model, estimator=estimator, config=config, person=person, preview=preview, on_frames=on_frames)
    raise StudioError(
        f"{path}: unsupported input '{suffix or '(no suffix)'}'; give an image ({', '.join(IMAGE_SUFFIXES)}) "
        f"or a video ({', '.join(VIDEO_SUFFIXES)})"
    )
