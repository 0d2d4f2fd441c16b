"""Linear blend skinning of arbitrary points: canonical -> posed and posed -> canonical.

Gaussian and NeRF avatars keep their primitives in a canonical space (see ``studio.body.base``:
the T-pose, or the legs-spread "big" pose) and move them with the body model's bones. This module
gives what they need, as pure functions on tensors in the style of smplx's ``lbs.py``:

- ``body_skinning``: for a batch of body parameters (T frames, one shape), the canonical vertices,
  faces, skin weights, bone names and parents, per-frame canonical -> posed bone transforms, and
  per-frame per-vertex pose-corrective offsets in canonical space;
- ``point_skin_weights``: skin weights for any points, from the nearest vertex or barycentric on
  the closest point of the surface;
- ``pose_points`` / ``unpose_points``: forward and inverse LBS of any points.

Reposing is exact for the body's own vertices:
``pose_points(vertices, weights, transforms, offsets=offsets) == body_model(params).vertices``.
The offsets carry what blending bone transforms cannot: SMPL-X/SMPL pose blend shapes (for the
``"t"`` canonical pose, exactly ``posedirs`` of each frame), and, away from the T-pose (the
``"big"`` pose, or Anny, which skins from its own A-pose rest), the difference between blending
the transforms from the canonical pose and from the body model's rest pose. They are zero at the
canonical pose itself and small (millimetres to a few centimetres) elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from studio.body.base import BodyModel, canonical_pose
from studio.errors import StudioError

# Intermediate tensors of the functions below are kept to about this many elements per chunk.
_CHUNK_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True)
class Skinning:
    """Everything needed to pose points with a body over T frames (see the module docstring)."""

    vertices: torch.Tensor  # [V, 3] canonical vertices, world, metres
    faces: torch.Tensor  # [F, 3] long
    weights: torch.Tensor  # [V, B] skin weights (rows sum to 1)
    transforms: torch.Tensor  # [T, B, 4, 4] canonical -> posed, per bone
    offsets: torch.Tensor  # [T, V, 3] pose-corrective offsets of the vertices, canonical space
    bone_names: tuple[str, ...]  # [B]
    bone_parents: tuple[int, ...]  # [B], -1 for the root
    canonical: str = "t"  # the canonical pose, a key of CANONICAL_POSES

    @property
    def num_frames(self) -> int:
        return int(self.transforms.shape[0])

    def to(self, device: torch.device | str) -> Skinning:
        fields = ("vertices", "faces", "weights", "transforms", "offsets")
        return dataclasses.replace(self, **{name: getattr(self, name).to(device) for name in fields})

    def posed_vertices(self) -> torch.Tensor:
        """The body's vertices in every frame, [T, V, 3] world (equal to the body model's)."""
        return pose_points(self.vertices, self.weights, self.transforms, offsets=self.offsets)

    def point_weights(self, points: torch.Tensor, *, mode: str = "nearest") -> torch.Tensor:
        """Skin weights [N, B] of canonical points [N, 3] (see ``point_skin_weights``)."""
        return point_skin_weights(points, self.vertices, self.faces, self.weights, mode=mode)

    def point_offsets(self, points: torch.Tensor, *, mode: str = "nearest") -> torch.Tensor:
        """Pose-corrective offsets [T, N, 3] of canonical points [N, 3], taken from the surface as
        ``point_weights`` takes the weights (for ``pose_points(..., offsets=...)``)."""
        ids, coefficients = surface_interpolation(points, self.vertices, self.faces, mode=mode)
        return torch.einsum("nk,tnkc->tnc", coefficients, self.offsets[:, ids])


def body_skinning(body_model: BodyModel, params: Mapping[str, torch.Tensor], *, canonical: str = "t") -> Skinning:
    """The skinning of a body over T frames, from a canonical pose.

    Args:
        body_model: any studio body model.
        params: its parameters, each [T, D] (as ``body_model.forward`` takes them), with one shape
            for all frames.
        canonical: the canonical pose, a key of ``CANONICAL_POSES`` ("t" or "big").
    Returns:
        Skinning with vertices [V, 3], transforms [T, B, 4, 4] and offsets [T, V, 3].
    """
    pose = canonical_pose(canonical)
    p = body_model.complete_params(params)
    shape = {}
    for key in body_model.shape_dims:
        value = p[key]
        if not bool((value == value[:1]).all()):
            raise StudioError(f"skinning needs one body shape for all frames, but '{key}' changes between frames")
        shape[key] = value[:1]
    rest = body_model({**shape, **pose})
    posed = body_model(p)
    transforms = posed.bone_transforms @ torch.linalg.inv(rest.bone_transforms)  # [T, B, 4, 4]
    vertices = rest.vertices[0]
    offsets = unpose_points(posed.vertices, body_model.skin_weights, transforms) - vertices
    return Skinning(
        vertices=vertices,
        faces=body_model.faces.clone(),
        weights=body_model.skin_weights.clone(),
        transforms=transforms,
        offsets=offsets,
        bone_names=tuple(body_model.bone_names),
        bone_parents=tuple(body_model.bone_parents),
        canonical=canonical,
    )


def blend_transforms(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Per-point blended bone transforms.

    Args:
        weights: [N, B] skin weights.
        transforms: [T, B, 4, 4] per-bone transforms.
    Returns:
        [T, N, 3, 4]: the top three rows of sum_b weights[n, b] * transforms[t, b].
    """
    return torch.einsum("nb,tbij->tnij", weights, transforms[:, :, :3, :])


def _over_frame_chunks(num_frames: int, num_points: int, per_chunk) -> torch.Tensor:
    """``per_chunk(frames: slice) -> [t, N, 3]`` over chunks of frames whose [t, N, 3, 4] blended
    transforms stay near ``_CHUNK_ELEMENTS``, joined: [T, N, 3]."""
    step = max(1, _CHUNK_ELEMENTS // max(12 * num_points, 1))
    parts = [per_chunk(slice(start, start + step)) for start in range(0, num_frames, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def pose_points(
    points: torch.Tensor,
    weights: torch.Tensor,
    transforms: torch.Tensor,
    *,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forward linear blend skinning: canonical points to posed points.

    Args:
        points: [N, 3] or [T or 1, N, 3] canonical points.
        weights: [N, B] skin weights (rows sum to 1).
        transforms: [T, B, 4, 4] canonical -> posed bone transforms.
        offsets: [T or 1, N, 3] pose-corrective offsets added in canonical space before posing.
    Returns:
        [T, N, 3] posed points.
    """
    T = transforms.shape[0]
    canonical = points if points.ndim == 3 else points[None]
    if offsets is not None:
        canonical = canonical + offsets
    canonical = canonical.expand(T, -1, -1)

    def posed(frames: slice) -> torch.Tensor:
        blended = blend_transforms(weights, transforms[frames])  # [t, N, 3, 4]
        return torch.einsum("tnij,tnj->tni", blended[..., :3], canonical[frames]) + blended[..., 3]

    return _over_frame_chunks(T, canonical.shape[1], posed)


def unpose_points(
    points: torch.Tensor,
    weights: torch.Tensor,
    transforms: torch.Tensor,
    *,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inverse linear blend skinning: posed points back to the canonical space, through the
    inverse of each point's blended transform (the inverse of ``pose_points``).

    Args:
        points: [T, N, 3] posed points.
        weights: [N, B] skin weights of the points (rows sum to 1).
        transforms: [T, B, 4, 4] canonical -> posed bone transforms.
        offsets: [T or 1, N, 3] pose-corrective offsets to take off in canonical space.
    Returns:
        [T, N, 3] canonical points.
    """
    T = transforms.shape[0]
    posed = points.expand(T, -1, -1)

    def canonical(frames: slice) -> torch.Tensor:
        blended = blend_transforms(weights, transforms[frames])  # [t, N, 3, 4]
        return torch.linalg.solve(blended[..., :3], (posed[frames] - blended[..., 3])[..., None])[..., 0]

    out = _over_frame_chunks(T, posed.shape[1], canonical)
    return out if offsets is None else out - offsets


def point_skin_weights(
    points: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    weights: torch.Tensor,
    *,
    mode: str = "nearest",
) -> torch.Tensor:
    """Skin weights for arbitrary points, from a surface in the same space.

    Args:
        points: [N, 3] points (canonical space, usually).
        vertices: [V, 3] the surface's vertices.
        faces: [F, 3] its triangles (vertex indices).
        weights: [V, B] the vertices' skin weights.
        mode: "nearest" (the weights of the nearest vertex) or "barycentric" (interpolated at the
            closest point of the closest triangle).
    Returns:
        [N, B] weights (rows sum to 1).
    """
    ids, coefficients = surface_interpolation(points, vertices, faces, mode=mode)
    blended = torch.einsum("nk,nkb->nb", coefficients, weights[ids])
    return blended / blended.sum(1, keepdim=True).clamp_min(1e-12)


def surface_interpolation(
    points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, *, mode: str = "nearest"
) -> tuple[torch.Tensor, torch.Tensor]:
    """How a per-vertex value is carried to arbitrary points: ``value[n] = sum_k c[n, k] value[ids[n, k]]``.

    Args:
        points: [N, 3]; vertices: [V, 3]; faces: [F, 3].
        mode: "nearest" (the nearest vertex's value) or "barycentric" (interpolated at the closest
            point of the closest triangle).
    Returns:
        ids [N, K] long vertex indices and coefficients c [N, K] (K = 1 or 3; rows sum to 1).
    """
    if mode == "nearest":
        ids = nearest_vertices(points, vertices)[:, None]
        return ids, torch.ones(ids.shape, dtype=points.dtype, device=points.device)
    if mode == "barycentric":
        face, barycentric, _ = closest_surface_points(points, vertices, faces)
        return faces[face], barycentric
    raise StudioError(f"unknown skin-weight mode '{mode}'; choose nearest or barycentric")


def nearest_vertices(points: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Index [N] of the nearest of vertices [V, 3] to each of points [N, 3] (chunked)."""
    step = max(1, _CHUNK_ELEMENTS // max(vertices.shape[0], 1))
    parts = [
        torch.cdist(points[i : i + step], vertices, compute_mode="donot_use_mm_for_euclid_dist").argmin(1)
        for i in range(0, points.shape[0], step)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=points.device)


def closest_surface_points(
    points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The closest point of a triangle mesh to each point (exact), in bounded memory.

    Each triangle's distance to a point lies within its centre's distance plus or minus its
    radius; only the triangles whose lower bound is below the smallest upper bound can hold the
    closest point, and only those are tested exactly.

    Args:
        points: [N, 3].
        vertices: [V, 3] mesh vertices.
        faces: [F, 3] triangles.
    Returns:
        face [N] long (the closest triangle), barycentric [N, 3] (of the closest point on it),
        distance [N].
    """
    origin = vertices.mean(0)  # distances from a nearby origin lose less to rounding
    triangles = vertices[faces] - origin  # [F, 3, 3]
    points = points - origin
    centre = triangles.mean(1)
    radius = (triangles - centre[:, None]).norm(dim=-1).amax(1)  # [F]
    F, N = faces.shape[0], points.shape[0]
    face = torch.zeros(N, dtype=torch.long, device=points.device)
    barycentric = torch.zeros(N, 3, dtype=points.dtype, device=points.device)
    distance = torch.zeros(N, dtype=points.dtype, device=points.device)
    step = max(1, _CHUNK_ELEMENTS // max(F, 1))
    for start in range(0, N, step):
        chunk = points[start : start + step]
        # Centre distances [n, F] by matrix products (fast), widened by a margin covering their
        # rounding (|d~ - d| <= sqrt(|d~^2 - d^2|)).
        scale = chunk.square().sum(1).amax() + centre.square().sum(1).amax()
        margin = (16 * torch.finfo(points.dtype).eps * scale).sqrt()
        to_centre = torch.cdist(chunk, centre)
        upper = (to_centre + radius).amin(1, keepdim=True) + margin
        rows, cand = torch.nonzero(to_centre - radius - margin <= upper, as_tuple=True)  # the pairs to test
        pairs = _CHUNK_ELEMENTS // 64
        dist = torch.cat(
            [
                closest_points_on_triangles(chunk[rows[i : i + pairs]], triangles[cand[i : i + pairs]])[1]
                for i in range(0, rows.numel(), pairs)
            ]
        )
        best = torch.full((chunk.shape[0],), float("inf"), dtype=dist.dtype, device=dist.device)
        best = best.scatter_reduce(0, rows, dist, reduce="amin")
        # The first pair of each point reaching its minimum.
        pair = torch.arange(rows.numel(), device=rows.device)
        first = torch.full_like(best, rows.numel(), dtype=torch.long)
        first = first.scatter_reduce(0, rows, torch.where(dist == best[rows], pair, rows.numel()), reduce="amin")
        sel = slice(start, start + chunk.shape[0])
        face[sel] = cand[first]
        barycentric[sel] = closest_points_on_triangles(chunk, triangles[face[sel]])[0]
        distance[sel] = best
    return face, barycentric, distance


def closest_points_on_triangles(points: torch.Tensor, triangles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest point of each triangle to a point (Ericson, Real-Time Collision Detection, 5.1.5).

    Args:
        points: [..., 3] (broadcast against the triangles' batch shape).
        triangles: [..., 3, 3] corners a, b, c.
    Returns:
        barycentric [..., 3] (weights of a, b, c) of the closest point, and its distance [...].
    """
    a, b, c = triangles.unbind(-2)
    ab, ac, ap = b - a, c - a, points - a
    bp, cp = points - b, points - c
    dot = lambda u, v: (u * v).sum(-1)  # noqa: E731
    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return num / torch.where(den.abs() > 1e-20, den, torch.ones_like(den))

    def bary(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.stack(torch.broadcast_tensors(u, v, w), dim=-1)

    zero, one = torch.zeros_like(d1), torch.ones_like(d1)
    # Inside the face, then the regions in reverse order of Ericson's tests, so earlier tests win.
    denom = va + vb + vc
    v_in, w_in = ratio(vb, denom), ratio(vc, denom)
    out = bary(1 - v_in - w_in, v_in, w_in)
    w_bc = ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    out = torch.where(((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0))[..., None], bary(zero, 1 - w_bc, w_bc), out)
    w_ac = ratio(d2, d2 - d6)
    out = torch.where(((vb <= 0) & (d2 >= 0) & (d6 <= 0))[..., None], bary(1 - w_ac, zero, w_ac), out)
    out = torch.where(((d6 >= 0) & (d5 <= d6))[..., None], bary(zero, zero, one), out)
    v_ab = ratio(d1, d1 - d3)
    out = torch.where(((vc <= 0) & (d1 >= 0) & (d3 <= 0))[..., None], bary(1 - v_ab, v_ab, zero), out)
    out = torch.where(((d3 >= 0) & (d4 <= d3))[..., None], bary(zero, one, zero), out)
    out = torch.where(((d1 <= 0) & (d2 <= 0))[..., None], bary(one, zero, zero), out)
    closest = (out[..., None] * triangles).sum(-2)
    return out, (points - closest).norm(dim=-1)
