"""Cameras, the one source of truth for projection and output sizes: ``Camera`` (pinhole intrinsics
and world-to-camera extrinsics per frame, plus the image size), projection, per-pixel rays,
unprojection and the output-size rule shared by fitting, rendering, animation and every pipeline.

Conventions: OpenCV camera axes (x right, y down, z forward), pixels with (0, 0) at the top-left
corner of the top-left pixel (a pixel's centre is at +0.5), metres in the world (Y up).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from studio.errors import StudioError


def output_size(image_size: tuple[int, int], longer: int) -> tuple[int, int]:
    """(height, width) with the longer side ``longer`` pixels and the aspect of ``image_size``, both
    even (video codecs need even sizes)."""
    h, w = image_size
    s = longer / max(h, w)
    return max(2, round(h * s / 2) * 2), max(2, round(w * s / 2) * 2)


def default_focal_length(image_size: tuple[int, int]) -> float:
    """studio's default focal length in pixels: the image's longer side (a ~53 degree field of view
    across it), the convention of most monocular body-fitting work when EXIF data is absent."""
    return float(max(image_size))


@dataclasses.dataclass(frozen=True)
class Camera:
    """A pinhole camera per frame."""

    K: torch.Tensor  # [T, 3, 3] intrinsics in pixels
    extrinsics: torch.Tensor  # [T, 4, 4] world -> camera, OpenCV axes
    image_size: tuple[int, int]  # (height, width) in pixels

    def __post_init__(self) -> None:
        T = self.K.shape[0]
        if self.K.shape != (T, 3, 3) or self.extrinsics.shape != (T, 4, 4):
            raise StudioError(
                f"camera K must be [T, 3, 3] and extrinsics [T, 4, 4], got {list(self.K.shape)} "
                f"and {list(self.extrinsics.shape)}"
            )
        h, w = self.image_size
        if h <= 0 or w <= 0:
            raise StudioError(f"camera image size must be positive, got {self.image_size}")
        object.__setattr__(self, "image_size", (int(h), int(w)))

    def __len__(self) -> int:
        return int(self.K.shape[0])

    @staticmethod
    def look_at(
        eye: Sequence[float],
        target: Sequence[float],
        *,
        image_size: tuple[int, int],
        focal: float | None = None,
        up: Sequence[float] = (0.0, 1.0, 0.0),
        num_frames: int = 1,
    ) -> Camera:
        """A static camera at ``eye`` looking at ``target`` (world coordinates, metres)."""
        eye_t = torch.tensor(eye, dtype=torch.float32)
        forward = torch.tensor(target, dtype=torch.float32) - eye_t
        forward = forward / forward.norm()
        right = torch.linalg.cross(forward, torch.tensor(up, dtype=torch.float32))
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        R = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
        E = torch.eye(4)
        E[:3, :3] = R
        E[:3, 3] = -R @ eye_t
        h, w = image_size
        f = default_focal_length(image_size) if focal is None else float(focal)
        K = torch.tensor([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
        return Camera(K=K.expand(num_frames, 3, 3).clone(), extrinsics=E.expand(num_frames, 4, 4).clone(), image_size=(h, w))

    def resized(self, size: int | tuple[int, int] | None) -> Camera:
        """The same camera for another output size.

        ``None`` keeps the size; an int makes the longer side that many pixels (keeping the aspect,
        rounded to even numbers for video codecs); ``(height, width)`` scales each axis to fit.
        """
        h, w = self.image_size
        if size is None:
            return self
        if isinstance(size, int):
            if size <= 0:
                raise StudioError(f"render size must be positive, got {size}")
            new_h, new_w = output_size((h, w), size)
        else:
            new_h, new_w = int(size[0]), int(size[1])
            if new_h <= 0 or new_w <= 0:
                raise StudioError(f"render size must be positive, got {size}")
        scale = torch.tensor([new_w / w, new_h / h, 1.0])
        return Camera(K=self.K * scale[None, :, None], extrinsics=self.extrinsics, image_size=(new_h, new_w))

    def index(self, frames: slice | torch.Tensor | Sequence[int]) -> Camera:
        return Camera(K=self.K[frames], extrinsics=self.extrinsics[frames], image_size=self.image_size)

    def to(self, device: torch.device | str) -> Camera:
        return Camera(K=self.K.to(device), extrinsics=self.extrinsics.to(device), image_size=self.image_size)


def world_to_camera(points: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """points [T, N, 3] world, extrinsics [T, 4, 4] -> [T, N, 3] camera space."""
    R = extrinsics[:, :3, :3]
    t = extrinsics[:, :3, 3]
    return points @ R.transpose(-1, -2) + t[:, None]


def project(points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-space points [T, N, 3] -> pixels [T, N, 2] (points behind the camera give garbage)."""
    uvw = points_cam @ K.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3].clamp_min(1e-6)


def rays(camera: Camera, frame: int = 0, *, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres of one frame (every ``stride``-th pixel).

    Returns:
        origins [H', W', 3] (the camera centre) and unit directions [H', W', 3], world coordinates.
    """
    h, w = camera.image_size
    K, E = camera.K[frame], camera.extrinsics[frame]
    v, u = torch.meshgrid(
        torch.arange(0, h, stride, dtype=K.dtype, device=K.device) + 0.5,
        torch.arange(0, w, stride, dtype=K.dtype, device=K.device) + 0.5,
        indexing="ij",
    )
    cam = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], dim=-1)  # [H', W', 3]
    R, t = E[:3, :3], E[:3, 3]
    directions = torch.nn.functional.normalize(cam @ R, dim=-1)  # R^T applied to row vectors
    origins = (-R.T @ t).expand_as(directions)
    return origins, directions


def unproject(pixels: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels [T, N, 2] at camera-axis depths [T, N] (metres) -> camera-space points [T, N, 3], with
    intrinsics K [T, 3, 3]; the inverse of ``project``."""
    x = (pixels[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0]
    y = (pixels[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
    return torch.stack([x * depth, y * depth, depth], dim=-1)


def camera_to_world(points: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """points [T, N, 3] camera space, extrinsics [T, 4, 4] -> [T, N, 3] world; the inverse of ``world_to_camera``."""
    R = extrinsics[:, :3, :3]
    t = extrinsics[:, :3, 3]
    return (points - t[:, None]) @ R


def orbit_cameras(
    center: Sequence[float],
    *,
    radius: float,
    image_size: tuple[int, int],
    num_frames: int,
    elevation: float = 0.0,
    start_azimuth: float = 0.0,
    focal: float | None = None,
) -> Camera:
    """Cameras on a circle around ``center`` (world, metres; Y up), all looking at it: one full turn
    in ``num_frames`` steps, starting at ``start_azimuth`` (radians about Y; 0 = on the +Z side, in
    front of a body at zero rotation), ``elevation`` radians above the horizontal. [T] frames."""
    import math

    c = torch.as_tensor(center, dtype=torch.float32)
    cams = []
    for k in range(num_frames):
        a = start_azimuth + 2 * math.pi * k / num_frames
        offset = torch.tensor([math.sin(a) * math.cos(elevation), math.sin(elevation), math.cos(a) * math.cos(elevation)]) * radius
        cams.append(Camera.look_at((c + offset).tolist(), c.tolist(), image_size=image_size, focal=focal))
    return Camera(K=torch.cat([k.K for k in cams]), extrinsics=torch.cat([k.extrinsics for k in cams]), image_size=image_size)


__all__ = ["Camera", "camera_to_world", "orbit_cameras", "default_focal_length", "output_size", "project", "rays", "unproject", "world_to_camera"]
