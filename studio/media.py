"""Reading and writing media. Every output is written atomically: to a temporary file in the same
folder, renamed into place only when complete, so an interrupted job never leaves a file that looks
finished."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from studio.errors import StudioError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def to_rgb(image: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, 1|3] uint8 -> [H, W, 3] uint8."""
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB(A) or grey uint8 image (png/jpg by extension), atomically."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=path.suffix or ".png")
    return path


class VideoWriter:
    """Streams RGB frames to an H.264 mp4 (imageio-ffmpeg's bundled ffmpeg), atomically.

    Use as a context manager: the file appears at ``path`` only if the block finishes without error.
    """

    def __init__(self, path: str | Path, *, fps: float, quality: int = 8) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise StudioError(f"{self.path}: video output must end in {', '.join(VIDEO_SUFFIXES)}")
        self.fps = float(fps)
        self.quality = quality
        self._atomic = atomic_path(self.path)
        self._writer = None
        self.frames_written = 0

    def __enter__(self) -> "VideoWriter":
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one [H, W, 3] uint8 frame (H and W even)."""
        import imageio_ffmpeg

        frame = np.ascontiguousarray(to_rgb(frame))
        if self._writer is None:
            h, w = frame.shape[:2]
            self._writer = imageio_ffmpeg.write_frames(
                str(self._tmp),
                (w, h),
                fps=self.fps,
                codec="libx264",
                quality=self.quality,
                macro_block_size=2,
                output_params=["-pix_fmt", "yuv420p"] if h % 2 == 0 and w % 2 == 0 else [],
                ffmpeg_log_level="error",
            )
            self._writer.send(None)
        self._writer.send(frame)
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._writer is not None:
            self._writer.close()
        if exc_type is None and self.frames_written == 0:
            exc_type, exc = StudioError, StudioError(f"{self.path}: no frames to write")
            self._atomic.__exit__(exc_type, exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)


def read_video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Stream [H, W, 3] uint8 RGB frames of a video."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    try:
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(gen)
    except (RuntimeError, OSError, StopIteration) as exc:
        raise StudioError(f"{path}: not a readable video ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    w, h = meta["size"]
    for buf in gen:
        yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)


def hstack_frames(frames: list[np.ndarray], *, labels: list[str] | None = None) -> np.ndarray:
    """Side-by-side RGB frames of the same height, each optionally labelled in its top-left corner."""
    import cv2

    tiles = []
    for i, frame in enumerate(frames):
        tile = np.ascontiguousarray(to_rgb(frame))
        if labels:
            scale = max(tile.shape[0] / 720.0, 0.35)
            cv2.putText(tile, labels[i], (8, int(24 * scale) + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)
