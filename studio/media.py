"""Reading and writing media. Every output is written atomically: to a temporary file in the same
folder, renamed into place only when complete, so an interrupted job never leaves a file that looks
finished."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import os
import subprocess
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from studio import validate
from studio.errors import StudioError
from studio.outputs import atomic_path

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")  # what studio reads
VIDEO_OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")  # what it writes (H.264)
# imageio-ffmpeg logs a warning whenever ffmpeg scales frames on decode, which studio asks for.
logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)


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
    """Streams RGB frames to an H.264 video through imageio-ffmpeg's bundled ffmpeg, atomically.

    Use as a context manager: the file appears at ``path`` only if the block finishes without error,
    ffmpeg exits cleanly, and the written file holds every frame (a full disk that cuts the file short
    is an error, never a published video).
    """

    def __init__(self, path: str | Path, *, fps: float, quality: int = 8) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in VIDEO_OUTPUT_SUFFIXES:
            raise StudioError(f"{self.path}: video output must end in {', '.join(VIDEO_OUTPUT_SUFFIXES)}")
        self.fps = validate.fps(fps, name="the video's frame rate")
        self.crf = round((1 - quality / 10) * 51)  # imageio's quality scale, 0-10
        self._process: subprocess.Popen | None = None
        self._log = None
        self.frames_written = 0

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        return self

    def _start(self, h: int, w: int) -> None:
        import imageio_ffmpeg

        self.frame_shape = (h, w, 3)
        pad = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if h % 2 or w % 2 else []
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-nostdin",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{self.fps:.6g}", "-i", "-",
            "-an", "-c:v", "libx264", "-crf", str(self.crf), "-pix_fmt", "yuv420p", *pad, str(self._tmp),
        ]  # fmt: skip
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def write(self, frame: np.ndarray) -> None:
        """Append one [H, W, 3] uint8 frame (every frame the size of the first)."""
        frame = np.ascontiguousarray(to_rgb(frame))
        if self._process is None:
            self._start(*frame.shape[:2])
        if frame.shape != self.frame_shape or frame.dtype != np.uint8:
            raise ValueError(f"video frames must all be {list(self.frame_shape)} uint8, got {list(frame.shape)} {frame.dtype}")
        try:
            self._process.stdin.write(frame.data)
        except (BrokenPipeError, OSError):
            self._finish()  # raises with ffmpeg's reason
            raise
        self.frames_written += 1

    def _finish(self) -> None:
        """Close ffmpeg and check what it wrote; raise OSError (ENOSPC) or StudioError on failure."""
        import imageio_ffmpeg

        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()
        code = process.wait()
        self._log.seek(0)
        log = self._log.read().decode(errors="replace").strip()
        self._log.close()
        if "No space left" in log or _nearly_full(self._tmp.parent):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        if code != 0:
            raise StudioError(f"{self.path}: the video encoder failed ({_first_line(log) if log else f'exit code {code}'})")
        try:
            written = imageio_ffmpeg.count_frames_and_secs(str(self._tmp))[0]
        except (RuntimeError, OSError) as exc:
            raise StudioError(f"{self.path}: the written video cannot be read back ({_first_line(exc)})") from exc
        if written != self.frames_written:
            raise StudioError(f"{self.path}: the encoder wrote {written} of {self.frames_written} frames")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.frames_written == 0:
                raise StudioError(f"{self.path}: no frames to write")
            if exc_type is None:
                self._finish()
            elif self._process is not None:
                self._process.kill()
                self._process.wait()
                self._process = None
        except BaseException as failure:
            self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, tb)


def _nearly_full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


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
        w, h = meta["size"]  # what ffmpeg yields: rotated as displayed (ffmpeg applies rotation metadata), scaled
        sw, sh = meta.get("source_size") or meta["size"]  # as stored
        if _rotated(stored=(sw, sh), shown=(w, h)):
            sw, sh = sh, sw
        try:
            fps = validate.fps(float(meta.get("fps") or 0.0), name="its frame rate")
            if sw * sh > validate.MAX_IMAGE_PIXELS:
                raise StudioError(f"its frames are {sw}x{sh}; studio takes up to {validate.MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            duration = float(meta.get("duration") or 0.0)
            num_frames = max(1, round(duration * fps)) if np.isfinite(duration) else 1
            validate.frame_count(num_frames, what="the video")
        except StudioError as exc:
            self.close()
            raise StudioError(f"{self.path}: {exc}") from None
        self.size = (int(h), int(w))
        self.info = VideoInfo(size=(int(sh), int(sw)), fps=fps, num_frames=num_frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        h, w = self.size
        try:
            for count, buf in enumerate(self._gen, start=1):
                if len(buf) != w * h * 3:
                    break
                if count > validate.MAX_FRAMES:  # the container's duration understated the length
                    validate.frame_count(count, what=str(self.path))
                yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
        except RuntimeError as exc:
            raise StudioError(f"{self.path}: the video is damaged ({_first_line(exc)})") from exc
        finally:
            self.close()

    def close(self) -> None:
        self._gen.close()


def _rotated(*, stored: tuple[int, int], shown: tuple[int, int]) -> bool:
    """Whether ffmpeg turned (width, height) frames by 90 degrees (rotation metadata), judged by which
    of the stored size and its transpose has the aspect of what it yields (which may be scaled)."""
    (sw, sh), (w, h) = stored, shown
    if sw == sh or min(sw, sh, w, h) <= 0:
        return False
    aspect = np.log(w / h)
    return abs(aspect - np.log(sh / sw)) < abs(aspect - np.log(sw / sh))


def video_info(path: str | Path) -> VideoInfo:
    """Size, frame rate and (estimated) frame count of a video; StudioError if it cannot be read."""
    reader = VideoReader(path)
    reader.close()
    return reader.info


def read_video_frames(path: str | Path, *, max_side: int | None = None) -> Iterator[np.ndarray]:
    """Stream [H, W, 3] uint8 RGB frames of a video (see ``VideoReader``)."""
    yield from VideoReader(path, max_side=max_side)


def read_npz(path: str | Path, *, what: str = ".npz file") -> dict[str, np.ndarray]:
    """All arrays of an .npz; one StudioError naming ``what`` for a missing or unreadable file.

    Pickled objects are refused, and so is an archive whose arrays would take more than
    ``validate.MAX_NPZ_BYTES`` once decompressed: their headers are read first, so a small file cannot
    make studio allocate gigabytes.
    """
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise StudioError(f"{path}: a single .npy array renamed .npz, not a readable {what}")
    if not magic.startswith(b"PK"):
        raise StudioError(f"{path}: not a readable {what} (not an .npz archive)")
    try:
        _check_npz_members(path)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except StudioError as exc:
        raise StudioError(f"{path}: not a readable {what}: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, NotImplementedError, io.UnsupportedOperation, zlib.error) as exc:
        raise StudioError(f"{path}: not a readable {what}: {_first_line(exc)}") from exc


def _check_npz_members(path: Path) -> None:
    """Read every member's .npy header (a few bytes each) and refuse pickles and oversized arrays."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                shape, _, dtype = np.lib.format._read_array_header(member, version)
            if dtype.hasobject:
                raise StudioError(f"'{info.filename[:-4]}' holds Python objects, which studio never unpickles")
            total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if total > validate.MAX_NPZ_BYTES:
                raise StudioError(f"its arrays would take over {validate.MAX_NPZ_BYTES >> 30} GB in memory")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as [H, W, 3] uint8 RGB, upright as its EXIF orientation says, CMYK and 16-bit
    converted, transparency composited over white; StudioError if it is missing, empty, not an image,
    or of a size studio refuses (see ``studio.validate``)."""
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise StudioError(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # studio's own limit follows
            im = Image.open(path)
        with im:
            w, h = im.size
            if w * h > validate.MAX_IMAGE_PIXELS:
                raise StudioError(f"{path}: the image is {w}x{h} pixels; studio takes up to {validate.MAX_IMAGE_PIXELS // 1_000_000} megapixels")
            if min(w, h) < validate.MIN_IMAGE_SIDE:
                raise StudioError(f"{path}: the image is {w}x{h} pixels; studio needs at least {validate.MIN_IMAGE_SIDE} pixels a side")
            image = _pil_to_rgb(ImageOps.exif_transpose(im))
    except StudioError:
        raise
    except Image.DecompressionBombError:
        raise StudioError(f"{path}: the image is larger than studio takes ({validate.MAX_IMAGE_PIXELS // 1_000_000} megapixels)") from None
    except Exception as exc:  # Pillow raises many types for undecodable data
        raise StudioError(f"{path}: not a readable image ({_first_line(exc)})") from exc
    return image


def _pil_to_rgb(im) -> np.ndarray:
    """A Pillow image of any mode -> [H, W, 3] uint8 RGB."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit grey and float
        a = np.asarray(im).astype(np.float64)
        peak = 1.0 if im.mode == "F" and a.max(initial=0) <= 1.0 else (255.0 if a.max(initial=0) <= 255 else 65535.0)
        return np.ascontiguousarray(to_rgb((a / peak * 255.0).clip(0, 255).astype(np.uint8)))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        a = np.asarray(im.convert("RGBA")).astype(np.float32)
        alpha = a[..., 3:4] / 255.0
        return np.ascontiguousarray((a[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8))
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))


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
