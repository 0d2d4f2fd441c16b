"""Solid primitives with exact signed distances (torch, differentiable) and triangle meshes (trimesh).

Every primitive lives in an object's local frame (metres, Y up, the ground at y = 0, the side a
person faces at +Z). ``sdf(points)`` is negative inside, positive outside and exact for the primitive
alone; a union of primitives (an object) takes the minimum, exact outside the union and a lower bound
of the depth where primitives overlap. A primitive with zero thickness (a box with one zero size) is
a flat patch: its ``sdf`` is the unsigned distance to the patch, used for contact-only parts.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import trimesh


def _vec(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32)


def _frame_to(direction: np.ndarray) -> np.ndarray:
    """A rotation [3, 3] turning +Z into the unit ``direction``."""
    z = np.array([0.0, 0.0, 1.0])
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    axis = np.cross(z, d)
    s, c = np.linalg.norm(axis), float(z @ d)
    if s < 1e-9:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    axis = axis / s
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = math.atan2(s, c)
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


@dataclasses.dataclass(frozen=True)
class Box:
    """A box of ``size`` (x, y, z extents) centred at ``center``, turned by ``rotation`` (radians
    about X, Y, Z, applied in that order); a zero extent makes a flat patch."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def _matrix(self) -> np.ndarray:
        return trimesh.transformations.euler_matrix(*self.rotation, axes="sxyz")[:3, :3]

    @functools.cached_property
    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        return _vec(self._matrix()), _vec(self.center), _vec(self.size) / 2, self.rotation == (0.0, 0.0, 0.0)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """points [N, 3] -> signed distances [N]."""
        R, center, half, aligned = self._tensors
        local = points - center if aligned else (points - center) @ R  # R^T (p - c) for row vectors
        q = local.abs() - half
        outside = q.clamp_min(0).norm(dim=-1)
        inside = q.amax(dim=-1).clamp_max(0)
        return outside + inside

    def mesh(self) -> trimesh.Trimesh:
        T = np.eye(4)
        T[:3, :3] = self._matrix()
        T[:3, 3] = self.center
        return trimesh.creation.box(extents=np.maximum(self.size, 1e-4), transform=T)


@dataclasses.dataclass(frozen=True)
class _Segment:
    """A segment from ``a`` to ``b`` with a ``radius``."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius: float

    def _ends(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _vec(self.a).to(points), _vec(self.b).to(points)


@dataclasses.dataclass(frozen=True)
class Cylinder(_Segment):
    """A capped cylinder of ``radius`` from point ``a`` to point ``b``."""

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        a, b = self._ends(points)
        length = (b - a).norm()
        axis = (b - a) / length
        rel = points - (a + b) / 2
        along = rel @ axis
        radial = (rel - along[:, None] * axis).norm(dim=-1)
        d = torch.stack([radial - self.radius, along.abs() - length / 2], dim=-1)
        return d.amax(dim=-1).clamp_max(0) + d.clamp_min(0).norm(dim=-1)

    def mesh(self) -> trimesh.Trimesh:
        return trimesh.creation.cylinder(radius=self.radius, segment=np.array([self.a, self.b], dtype=np.float64), sections=24)


@dataclasses.dataclass(frozen=True)
class Capsule(_Segment):
    """A capsule (a segment from ``a`` to ``b`` thickened by ``radius``)."""

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        a, b = self._ends(points)
        ba = b - a
        h = (((points - a) @ ba) / (ba @ ba)).clamp(0, 1)
        return (points - a - h[:, None] * ba).norm(dim=-1) - self.radius

    def mesh(self) -> trimesh.Trimesh:
        a, b = np.asarray(self.a, dtype=np.float64), np.asarray(self.b, dtype=np.float64)
        m = trimesh.creation.capsule(height=float(np.linalg.norm(b - a)), radius=self.radius, count=[16, 16])
        T = np.eye(4)
        T[:3, :3] = _frame_to(b - a)
        T[:3, 3] = (a + b) / 2
        m.apply_transform(T)
        return m


@dataclasses.dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return (points - _vec(self.center).to(points)).norm(dim=-1) - self.radius

    def mesh(self) -> trimesh.Trimesh:
        m = trimesh.creation.icosphere(subdivisions=3, radius=self.radius)
        m.apply_translation(self.center)
        return m


@dataclasses.dataclass(frozen=True)
class Torus:
    """A torus about the unit ``axis`` through ``center``: ring radius ``major``, tube radius ``minor``."""

    center: tuple[float, float, float]
    axis: tuple[float, float, float]
    major: float
    minor: float

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        n = _vec(self.axis).to(points)
        n = n / n.norm()
        rel = points - _vec(self.center).to(points)
        h = rel @ n
        ring = (rel - h[:, None] * n).norm(dim=-1) - self.major
        return torch.sqrt(ring.square() + h.square() + 1e-12) - self.minor

    def mesh(self) -> trimesh.Trimesh:
        m = trimesh.creation.torus(major_radius=self.major, minor_radius=self.minor, major_sections=32, minor_sections=12)
        T = np.eye(4)
        T[:3, :3] = _frame_to(np.asarray(self.axis, dtype=np.float64))
        T[:3, 3] = self.center
        m.apply_transform(T)
        return m


Primitive = Box | Cylinder | Capsule | Sphere | Torus


def union_sdf(primitives: list[Primitive], points: torch.Tensor) -> torch.Tensor:
    """The minimum of the primitives' signed distances at points [N, 3]: [N]."""
    return torch.stack([p.sdf(points) for p in primitives]).amin(dim=0)


__all__ = ["Box", "Capsule", "Cylinder", "Primitive", "Sphere", "Torus", "union_sdf"]
