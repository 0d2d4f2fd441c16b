"""One validation layer for what users hand to studio: numbers from options and files, frame counts,
image and render sizes. Every loader and command calls these before it allocates anything that a
file's contents or an option decides, and each failure is one StudioError naming the field.

The limits (also in the README's "Limits and safety"):
- motions: at most ``MAX_FRAMES`` frames after resampling, at ``MIN_FPS``..``MAX_FPS`` frames per second;
- images: at most ``MAX_IMAGE_PIXELS`` pixels, at least ``MIN_IMAGE_SIDE`` pixels a side;
- rendered and generated frames: ``MIN_SIZE``..``MAX_SIZE`` pixels a side;
- focal lengths: ``MIN_FOCAL``..``MAX_FOCAL`` pixels;
- .npz files: ``MAX_NPZ_BYTES`` of arrays once decompressed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from studio.errors import StudioError

MAX_FRAMES = 36_000  # 20 minutes at 30 fps
MIN_FPS, MAX_FPS = 0.1, 1000.0
MAX_IMAGE_PIXELS = 80_000_000  # a 80-megapixel photo
MIN_IMAGE_SIDE = 16
MIN_SIZE, MAX_SIZE = 16, 4096
MIN_FOCAL, MAX_FOCAL = 1.0, 1e6
MAX_NPZ_BYTES = 2 << 30
MAX_COORDINATE = 1e4  # metres: anything farther from the origin is not a person's motion


def number(value: float, *, name: str, low: float, high: float, low_open: bool = False) -> float:
    """``value`` as a float if it is finite and within [low, high] (or (low, high]); else one error."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v > high or v < low or (low_open and v == low):
        lower = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise StudioError(f"{name} must be {lower} and at most {high:g}, got {value!r}")
    return v


def integer(value: int, *, name: str, low: int, high: int) -> int:
    """``value`` as an int within [low, high]; else one error."""
    v = number(value, name=name, low=low, high=high)
    if v != int(v):
        raise StudioError(f"{name} must be a whole number, got {value!r}")
    return int(v)


def fps(value: float, *, name: str = "fps") -> float:
    """A frame rate in MIN_FPS..MAX_FPS."""
    return number(value, name=name, low=MIN_FPS, high=MAX_FPS)


def focal(value: float, *, name: str = "focal length") -> float:
    """A focal length in pixels, in MIN_FOCAL..MAX_FOCAL."""
    return number(value, name=name, low=MIN_FOCAL, high=MAX_FOCAL)


def size(value: int, *, name: str = "--size") -> int:
    """A side of a rendered or generated frame in pixels, in MIN_SIZE..MAX_SIZE."""
    return integer(value, name=name, low=MIN_SIZE, high=MAX_SIZE)


def image_size(text: str, *, name: str = "--size") -> tuple[int, int]:
    """"HEIGHTxWIDTH" -> (height, width), each in MIN_SIZE..MAX_SIZE."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StudioError(f"{name} must look like 640x480 (height x width), got '{text}'") from None
    return size(h, name=f"{name} height"), size(w, name=f"{name} width")


def frame_count(count: int, *, what: str) -> int:
    """A number of frames in 1..MAX_FRAMES (checked before the frames are allocated)."""
    if count < 1:
        raise StudioError(f"{what} has no frames")
    if count > MAX_FRAMES:
        raise StudioError(f"{what} would have {count:,} frames; studio takes at most {MAX_FRAMES:,} (20 minutes at 30 fps)")
    return int(count)


def resampled_count(count: int, source_fps: float, target_fps: float | None, *, what: str) -> int:
    """The number of frames ``count`` frames at ``source_fps`` become at ``target_fps`` (None: kept),
    refused above MAX_FRAMES before anything is allocated."""
    if target_fps is None or abs(target_fps - source_fps) < 1e-6:
        return frame_count(count, what=what)
    # The same count as the resampler's: floor((n - 1) * out / in) + 1, computed without overflow.
    n = math.floor((count - 1) * target_fps / source_fps) + 1 if count > 0 else 0
    if n > MAX_FRAMES:
        raise StudioError(
            f"{what} would have {n:,} frames at {target_fps:g} fps ({count:,} frames at {source_fps:g} fps); "
            f"studio takes at most {MAX_FRAMES:,}"
        )
    return frame_count(n, what=what)


def finite(array: np.ndarray, *, name: str, limit: float | None = None) -> np.ndarray:
    """A numeric array with no NaN or Inf (and |values| <= limit when given); else one error naming it."""
    arr = np.asarray(array)
    if arr.dtype.kind not in "biuf":
        raise StudioError(f"{name} must hold numbers, not {arr.dtype} values")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise StudioError(f"{name} holds {int(bad.sum())} NaN or infinite value(s) (the first at index {first})")
    if limit is not None and arr.size and float(np.abs(arr).max()) > limit:
        raise StudioError(f"{name} holds values up to {float(np.abs(arr).max()):.3g}; studio takes at most {limit:g}")
    return arr


def one_of(value: str, choices: Iterable[str], *, name: str) -> str:
    """``value`` if it is one of ``choices``; else one error listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise StudioError(f"{name} must be one of {', '.join(choices)}, got '{value}'")
    return value


def intrinsics(K: np.ndarray, *, name: str = "camera_K") -> np.ndarray:
    """Pinhole intrinsics [T, 3, 3]: finite, with focal lengths in MIN_FOCAL..MAX_FOCAL."""
    K = finite(K, name=name)
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    for label, f in (("fx", fx), ("fy", fy)):
        if f.size and (f.min() < MIN_FOCAL or f.max() > MAX_FOCAL):
            raise StudioError(f"{name}: focal length {label} must be {MIN_FOCAL:g}..{MAX_FOCAL:g} pixels, got {float(f.min() if f.min() < MIN_FOCAL else f.max()):g}")
    return K
