"""The Gaussian avatar: 3D Gaussians in the body model's canonical pose, each bound to a point of the
body's surface, posed with the body by linear blend skinning.

Binding: every Gaussian belongs to one triangle of the fitted body (``face_ids``) at a barycentric
point (``barycentric``) of it, the *anchor*. Its centre is the anchor plus an offset bounded by
``max_offset`` metres per axis, so the binding stays valid while the fit moves it. Its skin weights
and pose-corrective offsets are the body's, interpolated at the anchor; so a Gaussian on the
surface moves exactly as the body model's surface does.

Colour is spherical-harmonic (INRIA convention: colour = 0.5 + C0 * f_dc for degree 0); studio fits
degree 0 (one colour per Gaussian: the generated views cannot support view dependence).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import torch

from studio.body.base import BodyModel
from studio.body.joints import BODY_PART_NAMES
from studio.body.skinning import blend_transforms, body_skinning

SH_C0 = 0.28209479177387814
# More Gaussians where detail matters: relative surface density per body part.
PART_DENSITY = {"head": 4.0, "left_hand": 2.0, "right_hand": 2.0, "neck": 1.5}


@dataclasses.dataclass
class BodyBinding:
    """Which body the Gaussians are bound to: the model, its shape and the canonical pose."""

    body_model: str  # a key of studio.body.BODY_MODELS
    shape: dict[str, torch.Tensor]  # the model's shape fields, each [1, D]
    canonical: str = "big"  # a key of studio.body.base.CANONICAL_POSES
    max_offset: float = 0.05  # metres: bound on each offset component from the anchor

    def params(self) -> dict[str, torch.Tensor]:
        return {k: v.reshape(1, -1).float() for k, v in self.shape.items()}


@dataclasses.dataclass
class GaussianAvatar:
    """Gaussians in the canonical pose with their body binding. N Gaussians, K = (degree + 1)^2."""

    means: torch.Tensor  # [N, 3] canonical centres, metres
    quats: torch.Tensor  # [N, 4] canonical orientations, w first (not necessarily normalised)
    log_scales: torch.Tensor  # [N, 3]
    opacity_logits: torch.Tensor  # [N]
    sh: torch.Tensor  # [N, K, 3] spherical-harmonic coefficients (sh[:, 0] is f_dc)
    face_ids: torch.Tensor  # [N] long, the anchor's triangle
    barycentric: torch.Tensor  # [N, 3] the anchor's barycentric coordinates
    binding: BodyBinding

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1

    def colors(self) -> torch.Tensor:
        """[N, 3] RGB in 0..1 (view-independent part)."""
        return (0.5 + SH_C0 * self.sh[:, 0]).clamp(0.0, 1.0)

    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    def covariances(self) -> torch.Tensor:
        """[N, 3, 3] canonical covariances."""
        return covariance(self.quats, self.log_scales.exp())

    def subset(self, keep: torch.Tensor) -> GaussianAvatar:
        fields = ("means", "quats", "log_scales", "opacity_logits", "sh", "face_ids", "barycentric")
        return dataclasses.replace(self, **{f: getattr(self, f)[keep] for f in fields})


# --- geometry helpers -----------------------------------------------------------------------------


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[..., 4] quaternions (w first, any norm) -> [..., 3, 3] rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    R = torch.stack(
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
         2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
         2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1,
    )  # fmt: skip
    return R.reshape(*quats.shape[:-1], 3, 3)


def rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions, w first."""
    import roma

    xyzw = roma.rotmat_to_unitquat(R)
    return torch.cat([xyzw[..., 3:], xyzw[..., :3]], -1)


def covariance(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S R^T: quats [N, 4] (w first), scales [N, 3] -> [N, 3, 3]."""
    M = quat_to_rotmat(quats) * scales[:, None, :]
    return M @ M.transpose(-1, -2)


def decompose_covariance(covars: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quaternions [N, 4] (w first) and scales [N, 3] of covariances [N, 3, 3] (inverse of ``covariance``)."""
    evals, evecs = torch.linalg.eigh(covars)
    flip = torch.linalg.det(evecs) < 0
    evecs = torch.where(flip[:, None, None], evecs * torch.tensor([1.0, 1.0, -1.0]), evecs)
    return rotmat_to_quat(evecs), evals.clamp_min(1e-12).sqrt()


def anchors(vertices: torch.Tensor, faces: torch.Tensor, face_ids: torch.Tensor, barycentric: torch.Tensor) -> torch.Tensor:
    """Surface points [N, 3]: barycentric [N, 3] on triangles face_ids [N] of (vertices [V, 3], faces [F, 3])."""
    return torch.einsum("nk,nkc->nc", barycentric, vertices[faces[face_ids]])


def face_frames(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triangle orthonormal frames [F, 3, 3] (columns: first edge, in-plane normal to it, the
    triangle's normal) and areas [F]."""
    tri = vertices[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    n = torch.linalg.cross(e1, e2)
    area = 0.5 * n.norm(dim=-1)
    n = torch.nn.functional.normalize(n, dim=-1)
    t = torch.nn.functional.normalize(e1, dim=-1)
    b = torch.linalg.cross(n, t)
    return torch.stack([t, b, n], -1), area


# --- initialisation -------------------------------------------------------------------------------


def sample_surface(
    vertices: torch.Tensor, faces: torch.Tensor, part_labels: torch.Tensor, count: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``count`` points on a mesh, spread by area times ``PART_DENSITY`` (denser on the head and
    hands), at least one per triangle: face ids [N] and barycentric coordinates [N, 3]."""
    _, area = face_frames(vertices, faces)
    density = torch.ones(len(BODY_PART_NAMES))
    for name, value in PART_DENSITY.items():
        density[BODY_PART_NAMES.index(name)] = value
    face_part = part_labels[faces].mode(dim=1).values
    weight = area * density[face_part]
    extra = max(count - faces.shape[0], 0)
    expected = weight / weight.sum() * extra
    per_face = 1 + expected.floor().long() + (torch.rand(faces.shape[0], generator=generator) < expected.frac()).long()
    face_ids = torch.repeat_interleave(torch.arange(faces.shape[0]), per_face)
    # Uniform points on each triangle (the square-root trick).
    r1 = torch.rand(face_ids.shape[0], generator=generator).sqrt()
    r2 = torch.rand(face_ids.shape[0], generator=generator)
    bary = torch.stack([1 - r1, r1 * (1 - r2), r1 * r2], -1)
    return face_ids, bary


def init_avatar(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    part_labels: torch.Tensor,
    binding: BodyBinding,
    *,
    count: int,
    colors_at: callable,
    generator: torch.Generator,
    opacity: float = 0.9,
) -> GaussianAvatar:
    """Gaussians on the canonical body surface: flat discs in the triangles' planes, sized by the
    local triangle area per Gaussian.

    Args:
        vertices: [V, 3] canonical vertices; faces: [F, 3]; part_labels: [V].
        count: about how many Gaussians.
        colors_at: (face_ids [N], barycentric [N, 3]) -> [N, 3] RGB in 0..1 (from the textured avatar).
    """
    face_ids, bary = sample_surface(vertices, faces, part_labels, count, generator=generator)
    frames, area = face_frames(vertices, faces)
    per_face = torch.bincount(face_ids, minlength=faces.shape[0]).clamp_min(1).float()
    spacing = (area / per_face).clamp_min(1e-10).sqrt()[face_ids]  # [N] metres between neighbours
    scales = torch.stack([0.55 * spacing, 0.55 * spacing, 0.15 * spacing], -1).clamp_min(1e-4)
    rgb = colors_at(face_ids, bary).clamp(0.02, 0.98)
    sh = ((rgb - 0.5) / SH_C0)[:, None, :]
    return GaussianAvatar(
        means=anchors(vertices, faces, face_ids, bary),
        quats=rotmat_to_quat(frames[face_ids]),
        log_scales=scales.log(),
        opacity_logits=torch.full((face_ids.shape[0],), math.log(opacity / (1 - opacity))),
        sh=sh,
        face_ids=face_ids,
        barycentric=bary,
        binding=binding,
    )


# --- posing ---------------------------------------------------------------------------------------


class GaussianRig:
    """Moves an avatar's Gaussians with its body: the canonical body, each Gaussian's skin weights
    (interpolated at its anchor), and per frame the blended bone transforms and pose correctives."""

    def __init__(self, body_model: BodyModel, binding: BodyBinding, face_ids: torch.Tensor, barycentric: torch.Tensor) -> None:
        from studio.errors import StudioError

        if body_model.name != binding.body_model:
            raise StudioError(f"this avatar is bound to the '{binding.body_model}' body model, not '{body_model.name}'")
        self.body_model, self.binding = body_model, binding
        self.faces = body_model.faces
        with torch.no_grad():
            self.vertices = body_model.rest_vertices(binding.params(), canonical=binding.canonical)[0]  # [V, 3]
        if face_ids.numel() and int(face_ids.max()) >= self.faces.shape[0]:
            raise StudioError(f"this avatar's Gaussians name triangles up to {int(face_ids.max())}, but the body has {self.faces.shape[0]}")
        self.corners = self.faces[face_ids]  # [N, 3] vertex ids
        self.barycentric = barycentric
        self.weights = torch.einsum("nk,nkb->nb", barycentric, body_model.skin_weights[self.corners])  # [N, B]

    def anchors(self) -> torch.Tensor:
        """[N, 3] the anchors on the canonical body."""
        return torch.einsum("nk,nkc->nc", self.barycentric, self.vertices[self.corners])

    def frame_transforms(self, body: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-Gaussian canonical -> posed affine maps for T frames of pose parameters (the
        avatar's own shape replaces any shape in ``body``).

        Returns:
            A [T, N, 3, 4] blended bone transforms, and corrective offsets [T, N, 3] (canonical space,
            added before A).
        """
        params = {k: v for k, v in body.items() if k not in self.body_model.shape_dims}
        T = next(iter(params.values())).shape[0]
        params.update({k: v.expand(T, -1) for k, v in self.binding.params().items()})
        with torch.no_grad():
            skin = body_skinning(self.body_model, params, canonical=self.binding.canonical)
            offsets = torch.einsum("nk,tnkc->tnc", self.barycentric, skin.offsets[:, self.corners])
            return blend_transforms(self.weights, skin.transforms), offsets


def pose_gaussians(means: torch.Tensor, covars: torch.Tensor, A: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical Gaussians to one frame's pose (differentiable in means and covars).

    Args:
        means: [N, 3]; covars: [N, 3, 3] canonical. A: [N, 3, 4] blended transforms; offsets: [N, 3].
    Returns:
        posed means [N, 3] and covariances [N, 3, 3] (A Sigma A^T).
    """
    L = A[..., :3]
    posed = torch.einsum("nij,nj->ni", L, means + offsets) + A[..., 3]
    return posed, L @ covars @ L.transpose(-1, -2)


__all__ = [
    "SH_C0",
    "BodyBinding",
    "GaussianAvatar",
    "GaussianRig",
    "anchors",
    "covariance",
    "decompose_covariance",
    "init_avatar",
    "pose_gaussians",
    "quat_to_rotmat",
    "rotmat_to_quat",
    "sample_surface",
]


def concat_avatars(first: GaussianAvatar, second: GaussianAvatar) -> GaussianAvatar:
    """The Gaussians of two avatars with the same binding, in one."""
    fields = ("means", "quats", "log_scales", "opacity_logits", "sh", "face_ids", "barycentric")
    return dataclasses.replace(first, **{f: torch.cat([getattr(first, f), getattr(second, f)]) for f in fields})


def lift_silhouette(
    image: torch.Tensor,
    mask: torch.Tensor,
    depth: np.ndarray,
    camera,
    *,
    posed_vertices: torch.Tensor,
    rig_for: callable,
    body: Mapping[str, torch.Tensor],
    binding: BodyBinding,
) -> GaussianAvatar | None:
    """Gaussians for the person pixels of a photo view that the fitted body does not cover (hair,
    loose clothes, where the body fit is thinner than the person): each such pixel is lifted to 3D
    at the depth of the nearest body pixel, bound to the closest point of the posed body's surface,
    and kept if its canonical offset from that anchor is within the binding's ``max_offset``.

    Args:
        image: [h, w, 3] float 0..1; mask: [h, w] float 0..1 (person); depth: [h, w] the body's
            camera-axis depth in this view (0: no body); camera: its Camera (one frame).
        posed_vertices: [V, 3] the body in the photo's pose (world).
        rig_for: (face_ids, barycentric) -> GaussianRig of the avatar's body.
        body: the photo's body parameters (T=1).
    Returns:
        the new Gaussians (canonical), or None when every person pixel is covered.
    """
    import cv2

    from studio.body.skinning import closest_surface_points
    from studio.camera import camera_to_world, unproject

    covered = depth > 0
    todo = (mask.numpy() > 0.5) & ~covered
    if not todo.any() or not covered.any():
        return None
    _, labels = cv2.distanceTransformWithLabels((~covered).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    ys_c, xs_c = np.nonzero(covered)
    label_depth = np.zeros(labels.max() + 1, np.float32)
    label_depth[labels[ys_c, xs_c]] = depth[ys_c, xs_c]
    ys, xs = np.nonzero(todo)
    z = torch.from_numpy(label_depth[labels[ys, xs]])
    pix = torch.from_numpy(np.stack([xs + 0.5, ys + 0.5], -1).astype(np.float32))
    world = camera_to_world(unproject(pix[None], z[None], camera.K[:1]), camera.extrinsics[:1])[0]  # [P, 3]
    faces = rig_for(torch.zeros(1, dtype=torch.long), torch.ones(1, 3) / 3).faces
    face_ids, bary, _ = closest_surface_points(world, posed_vertices, faces)
    rig = rig_for(face_ids, bary)
    A, corrective = rig.frame_transforms(body)
    L, a = A[0, ..., :3], A[0, ..., 3]
    canonical = torch.linalg.solve(L, (world - a)[..., None])[..., 0] - corrective[0]
    offset = canonical - rig.anchors()
    keep = offset.abs().amax(-1) <= binding.max_offset * 0.98
    if not bool(keep.any()):
        return None
    n = int(keep.sum())
    footprint = (z[keep] / camera.K[0, 0, 0]).clamp_min(1e-4)  # metres per pixel at that depth
    rgb = image[ys[keep.numpy()], xs[keep.numpy()]].clamp(0.02, 0.98)
    return GaussianAvatar(
        means=canonical[keep], quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4).clone(),
        log_scales=(0.6 * footprint).log()[:, None].expand(n, 3).clone(), opacity_logits=torch.full((n,), math.log(0.9 / 0.1)),
        sh=((rgb - 0.5) / SH_C0)[:, None, :], face_ids=face_ids[keep], barycentric=bary[keep], binding=binding,
    )  # fmt: skip
