"""Any motion source -> HumanCondition, by suffix, in one place: a video (estimated and fitted), a BVH,
a studio motion .npz (a saved HumanCondition) or an SMPL-X/AMASS .npz. ``motion_duration`` tells a
source's length cheaply, before any of that work, so that callers can refuse long inputs first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from studio.body.base import BodyModel
from studio.condition import FORMAT, HumanCondition
from studio.errors import StudioError

MOTION_KINDS = ("video", "bvh", "npz")


def motion_kind(path: str | Path) -> str:
    """"video", "bvh" or "npz" by the file's suffix; one error naming what is accepted otherwise."""
    from studio.media import VIDEO_SUFFIXES

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in (".bvh", ".npz"):
        return suffix[1:]
    raise StudioError(
        f"{path}: unsupported motion '{suffix or '(no suffix)'}'; give a video ({', '.join(VIDEO_SUFFIXES)}), a .bvh or a motion .npz"
    )


def _is_condition(arrays: dict[str, np.ndarray]) -> bool:
    return "format" in arrays and str(arrays["format"]) == FORMAT


def load_motion(
    path: str | Path,
    body_model: BodyModel,
    *,
    fps: float | None = 30.0,
    on_frames: Callable[[int], None] | None = None,
) -> tuple[HumanCondition, str]:
    """A motion from a video, a BVH, a studio motion .npz or an SMPL-X .npz.

    Args:
        fps: the frame rate BVH files are resampled to (None: the file's own). SMPL-X .npz files keep
            their own rate, videos and studio motions their frames.
    Returns:
        (condition, kind) with kind "video", "bvh" or "npz".
    """
    path = Path(path)
    kind = motion_kind(path)
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    if kind == "video":
        from studio.capture import pose_video

        return pose_video(path, body_model=body_model, on_frames=on_frames).condition, kind
    if kind == "npz":
        from studio.media import read_npz

        if _is_condition(read_npz(path, what="motion (.npz) file")):
            return HumanCondition.load(path), kind
    from studio.motion.retarget import import_motion

    return import_motion(path, body_model, fps=None if kind == "npz" else fps), kind


def motion_duration(path: str | Path) -> float:
    """A motion source's length in seconds, read from its header or its arrays (no fitting or
    retargeting); StudioError for an unreadable file."""
    path = Path(path)
    kind = motion_kind(path)
    if kind == "video":
        from studio.media import video_info

        info = video_info(path)
        return info.num_frames / info.fps
    if kind == "bvh":
        from studio.motion.bvh import read_bvh

        bvh = read_bvh(path)
        return bvh.motion.shape[0] * bvh.frame_time
    from studio import validate
    from studio.media import read_npz

    arrays = read_npz(path, what="motion (.npz) file")
    if _is_condition(arrays):
        frames, rate = np.asarray(arrays.get("camera_K", np.zeros((0,)))).shape[0], arrays.get("fps", 30.0)
    else:
        poses = arrays.get("poses", arrays.get("body_pose"))
        if poses is None or np.asarray(poses).ndim == 0:
            raise StudioError(f"{path}: no 'poses' (AMASS) or 'body_pose' (smplx) entry; not a motion file")
        rate = next((arrays[k] for k in ("mocap_frame_rate", "mocap_framerate", "fps") if k in arrays), 30.0)
        frames = np.asarray(poses).shape[0]
    rate = validate.finite(np.asarray(rate), name=f"{path}: its frame rate").reshape(-1)
    if rate.size != 1:
        raise StudioError(f"{path}: its frame rate must be one number")
    return frames / validate.fps(float(rate[0]), name=f"{path}: its frame rate")
