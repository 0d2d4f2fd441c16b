"""Measures between a body mesh and an object: inside tests, penetration, contact, centre of mass and
static balance. The exact measures here give the figures a scene reports; ``optimize`` uses cheaper
differentiable stand-ins and is judged by these.

- Inside a closed mesh: the generalised winding number (Jacobson et al. 2013), the solid angle the
  mesh subtends at a point over 4 pi: 1 inside, 0 outside, robust to small holes.
- Penetration, both ways: body vertices inside the object (depth: the object's signed distance) and
  object surface points inside the body (depth: the exact distance to the body's surface).
- Contact: the smallest distance from a body region's vertices to an object part.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from studio.body.skinning import closest_surface_points

_CHUNK = 4_000_000  # point-triangle pairs per chunk


def winding_numbers(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Generalised winding numbers of points [N, 3] with respect to the triangle mesh (vertices
    [V, 3], faces [F, 3], outward-facing): [N], about 1 inside a closed mesh and 0 outside."""
    tri = vertices[faces].double()  # [F, 3, 3]
    out = []
    step = max(1, _CHUNK // max(faces.shape[0], 1))
    for start in range(0, points.shape[0], step):
        p = points[start : start + step].double()
        a, b, c = (tri[None, :, k] - p[:, None] for k in range(3))  # [n, F, 3]
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(torch.atan2(det, den).sum(-1) / (2 * torch.pi))  # each triangle: half its solid angle
    if not out:
        return torch.zeros(0, dtype=points.dtype, device=points.device)
    return torch.cat(out).to(points.dtype)


class RayIndex:
    """Inside tests against one closed, outward-facing triangle mesh (see ``inside_mesh``), with the
    triangles bucketed once by their footprint on a grid of ``cell`` metres in x and z."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, *, cell: float = 0.02) -> None:
        self.tri = vertices.detach().cpu().double().numpy()[faces.cpu().numpy()]  # [F, 3, 3]
        self.cell = cell
        tri = self.tri
        self.lo, self.hi = tri.reshape(-1, 3).min(0), tri.reshape(-1, 3).max(0)
        lo = self.lo[[0, 2]]
        self.nx, self.nz = (np.ceil((self.hi[[0, 2]] - lo) / cell).astype(int) + 1).tolist()
        tmin = np.floor((tri[:, :, [0, 2]].min(1) - lo) / cell).astype(int)
        tmax = np.floor((tri[:, :, [0, 2]].max(1) - lo) / cell).astype(int)
        span = (tmax - tmin + 1).prod(1)
        # every (cell, triangle) pair of each triangle's footprint, sorted by cell
        tri_ids = np.repeat(np.arange(len(tri)), span)
        local = np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span)
        width = np.repeat(tmax[:, 1] - tmin[:, 1] + 1, span)
        cells = (np.repeat(tmin[:, 0], span) + local // width) * self.nz + np.repeat(tmin[:, 1], span) + local % width
        order = np.argsort(cells, kind="stable")
        cells, self.tri_ids = cells[order], tri_ids[order]
        self.starts = np.searchsorted(cells, np.arange(self.nx * self.nz))
        self.counts = np.searchsorted(cells, np.arange(self.nx * self.nz), side="right") - self.starts

    def contains(self, points: torch.Tensor, *, shift: np.ndarray | None = None) -> torch.Tensor:
        """Which points [N, 3] lie inside the mesh (moved by ``shift`` [3], if given): [N] bool."""
        P = points.detach().cpu().double().numpy()
        if shift is not None:
            P = P - shift
        inside = np.zeros(len(P), dtype=bool)
        candidates = np.flatnonzero(((P >= self.lo) & (P <= self.hi)).all(1))
        if candidates.size == 0 or len(self.tri) == 0:
            return torch.from_numpy(inside).to(points.device)
        q = P[candidates]
        qc = np.floor((q[:, [0, 2]] - self.lo[[0, 2]]) / self.cell).astype(int)
        qcell = qc[:, 0] * self.nz + qc[:, 1]
        n = self.counts[qcell]
        point_ids = np.repeat(np.arange(len(q)), n)
        pair_tri = self.tri_ids[np.repeat(self.starts[qcell], n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)]
        a, b, c = (self.tri[pair_tri, k] for k in range(3))
        p = q[point_ids]
        # barycentric coordinates of the point's footprint in the triangle's footprint (x, z)
        d0 = (b[:, 0] - a[:, 0]) * (c[:, 2] - a[:, 2]) - (c[:, 0] - a[:, 0]) * (b[:, 2] - a[:, 2])
        valid = np.abs(d0) > 1e-18
        d0 = np.where(valid, d0, 1.0)
        u = ((b[:, 0] - p[:, 0]) * (c[:, 2] - p[:, 2]) - (c[:, 0] - p[:, 0]) * (b[:, 2] - p[:, 2])) / d0
        v = ((c[:, 0] - p[:, 0]) * (a[:, 2] - p[:, 2]) - (a[:, 0] - p[:, 0]) * (c[:, 2] - p[:, 2])) / d0
        w = 1.0 - u - v
        hit = valid & (u >= 0) & (v >= 0) & (w >= 0) & (u * a[:, 1] + v * b[:, 1] + w * c[:, 1] > p[:, 1])
        # the triangle's normal points up (+1: the ray leaves the solid) or down (-1: it enters)
        sign = -np.sign(d0)  # n_y = (c - a)_x (b - a)_z - (b - a)_x (c - a)_z = -d0
        inside[candidates] = np.bincount(point_ids[hit], weights=sign[hit], minlength=len(q)) > 0.5
        return torch.from_numpy(inside).to(points.device)


def inside_mesh(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor, *, cell: float = 0.02) -> torch.Tensor:
    """Which points [N, 3] lie inside the closed, outward-facing mesh: [N] bool.

    The winding number along one ray: a ray from each point straight up (+Y) counts the triangles it
    crosses, +1 where it leaves the solid and -1 where it enters; the sum is 1 inside and 0 outside
    (2 inside a nested closed part). Triangles are bucketed by their footprint on a grid of ``cell``
    metres in x and z (``RayIndex``), so each point tests only the triangles above its cell; the
    result equals ``winding_numbers(...) > 0.5`` for closed meshes, at a small fraction of its cost."""
    return RayIndex(vertices, faces, cell=cell).contains(points)


@dataclasses.dataclass
class Penetration:
    """How deep the body and the object interpenetrate, metres."""

    body_in_object: float  # the deepest body vertex inside the object
    object_in_body: float  # the deepest object surface point inside the body
    body_vertices_inside: int
    object_points_inside: int

    @property
    def depth(self) -> float:
        return max(self.body_in_object, self.object_in_body)


def penetration(
    body_vertices: torch.Tensor,
    body_faces: torch.Tensor,
    object_sdf,
    object_points: torch.Tensor,
) -> Penetration:
    """Penetration both ways, exactly (up to the object's sampling).

    Args:
        body_vertices: [V, 3] world; body_faces: [F, 3] (a closed mesh).
        object_sdf: world points [N, 3] -> the object's signed distance [N] (negative inside).
        object_points: [M, 3] world points on the object's surface.
    """
    with torch.no_grad():
        sdf = object_sdf(body_vertices)
        body_depth = float((-sdf).clamp_min(0).max()) if sdf.numel() else 0.0
        inside = inside_mesh(object_points, body_vertices, body_faces)
        object_depth = 0.0
        if inside.any():
            _, _, distance = closest_surface_points(object_points[inside], body_vertices, body_faces)
            object_depth = float(distance.max())
    return Penetration(body_depth, object_depth, int((sdf < 0).sum()), int(inside.sum()))


def region_distance(region_points: torch.Tensor, part_distance) -> torch.Tensor:
    """The smallest distance from a body region's points [N, 3] to an object part (``part_distance``:
    points -> unsigned distances [N]); 0 when touching or overlapping. A scalar tensor."""
    return part_distance(region_points).min()


def mesh_centroid(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """The centre of mass of the solid a closed mesh bounds (uniform density): [3] (differentiable).

    Sums the signed tetrahedra that each triangle spans with the mesh's mean vertex."""
    origin = vertices.mean(0).detach()
    a, b, c = (vertices[faces[:, k]] - origin for k in range(3))
    volume = (a * torch.linalg.cross(b, c, dim=-1)).sum(-1) / 6  # [F]
    centre = (a + b + c) / 4
    return origin + (volume[:, None] * centre).sum(0) / volume.sum()


def support_distance(point: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """How far a ground point [2] (x, z) lies outside the convex hull of support points [K, 2]: a
    scalar (0 inside; differentiable in both). Fewer than 3 distinct points: the distance to their
    segment or point."""
    from scipy.spatial import ConvexHull, QhullError

    pts = support.detach().cpu().double().numpy()
    try:
        hull = ConvexHull(pts).vertices
    except (QhullError, ValueError):
        hull = None
    if hull is None or len(hull) < 3:  # degenerate support: distance to its extreme points' segment
        order = np.argsort(pts[:, 0] + 1e-3 * pts[:, 1])
        a, b = support[int(order[0])], support[int(order[-1])]
        ab = b - a
        t = ((point - a) @ ab / (ab @ ab).clamp_min(1e-12)).clamp(0, 1)
        return (point - (a + t * ab)).norm()
    poly = support[torch.as_tensor(hull, dtype=torch.long)]  # counter-clockwise (scipy's order in 2-D)
    edges = torch.roll(poly, -1, 0) - poly
    rel = point - poly
    cross = edges[:, 0] * rel[:, 1] - edges[:, 1] * rel[:, 0]
    if bool((cross >= 0).all()):
        return point.new_zeros(())
    t = ((rel * edges).sum(-1) / edges.square().sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return (rel - t[:, None] * edges).norm(dim=-1).min()


__all__ = [
    "Penetration",
    "RayIndex",
    "inside_mesh",
    "mesh_centroid",
    "penetration",
    "region_distance",
    "support_distance",
    "winding_numbers",
]
