"""Reading and writing media. Every output is written atomically: to a temporary file in the same
folder, renamed into place only when complete, so an interrupted job never leaves a file that looks
finished."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from studio.errors import StudioError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")
# imageio-ffmpeg logs a warning whenever ffmpeg scales frames on decode, which studio asks for.
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)


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

    def __enter__(self) -> VideoWriter:
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video file holds."""

    size: tuple[int, int]  # (height, width) as displayed
    fps: float
    num_frames: int  # an estimate from the container's duration


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class VideoReader:
    """Streams a video's RGB frames through one ffmpeg process, optionally scaled down by ffmpeg so
    that the longer side is at most ``max_side`` (much faster than decoding at full size).

    Attributes: ``info`` (the source's VideoInfo) and ``size`` (height, width of the frames yielded).
    """

    def __init__(self, path: str | Path, *, max_side: int | None = None) -> None:
        import imageio_ffmpeg

        self.path = Path(path)
        if not self.path.is_file():
            raise StudioError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise StudioError(f"{self.path}: the file is empty")
        output_params = None
        if max_side is not None:
            m = int(max_side)
            output_params = ["-vf", f"scale=w='if(gte(iw,ih),min({m},iw),-2)':h='if(gte(iw,ih),-2,min({m},ih))':flags=area"]
        try:
            self._gen = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24", output_params=output_params)
            meta = next(self._gen)
        except (RuntimeError, OSError, StopIteration) as exc:
            raise StudioError(f"{self.path}: not a readable video ({_first_line(exc)})") from exc
        w, h = meta["size"]
        sw, sh = meta.get("source_size") or meta["size"]
        fps = float(meta.get("fps") or 0.0)
        if not fps > 0:
            self.close()
            raise StudioError(f"{self.path}: the video has no frame rate")
        duration = float(meta.get("duration") or 0.0)
        self.size = (int(h), int(w))
        self.info = VideoInfo(size=(int(sh), int(sw)), fps=fps, num_frames=max(1, round(duration * fps)))

    def __iter__(self) -> Iterator[np.ndarray]:
        h, w = self.size
        try:
            for buf in self._gen:
                if len(buf) != w * h * 3:
                    break
                yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
        except RuntimeError as exc:
            raise StudioError(f"{self.path}: the video is damaged ({_first_line(exc)})") from exc
        finally:
            self.close()

    def close(self) -> None:
        self._gen.close()


def video_info(path: str | Path) -> VideoInfo:
    """Size, frame rate and (estimated) frame count of a video; StudioError if it cannot be read."""
    reader = VideoReader(path)
    reader.close()
    return reader.info


def read_video_frames(path: str | Path, *, max_side: int | None = None) -> Iterator[np.ndarray]:
    """Stream [H, W, 3] uint8 RGB frames of a video (see ``VideoReader``)."""
    yield from VideoReader(path, max_side=max_side)


def read_npz(path: str | Path, *, what: str = ".npz file") -> dict[str, np.ndarray]:
    """All arrays of an .npz (no pickles); one StudioError naming ``what`` for a missing or
    unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, io.UnsupportedOperation) as exc:
        raise StudioError(f"{path}: not a readable {what}: {exc}") from exc


def read_image(path: str | Path) -> np.ndarray:
    """An image file as [H, W, 3] uint8 RGB; StudioError if it is missing, empty or not an image."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise StudioError(f"{path}: the file is empty")
    try:
        image = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for undecodable data
        raise StudioError(f"{path}: not a readable image ({_first_line(exc)})") from exc
    if image.ndim == 4:  # animated: the first frame
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 16:
        raise StudioError(f"{path}: not an RGB image (shape {list(image.shape)})")
    if image.dtype != np.uint8:
        image = (image / max(1, np.iinfo(image.dtype).max if image.dtype.kind in "ui" else 1) * 255).clip(0, 255).astype(np.uint8)
    if image.shape[2] == 4:  # composite transparency over white
        a = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3] * a + 255.0 * (1 - a)).astype(np.uint8)
    return np.ascontiguousarray(to_rgb(image))


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
