"""The body-model protocol shared by every backend, and the canonical space they all share.

World frame of every body model: metres, Y up, the body facing +Z, its left side at +X (SMPL-X's).
Pose parameters are SMPL-X's: axis-angle rotations relative to the parent, in world-aligned axes of
the rest pose, where the rest pose (all rotations zero) is a T-pose with flat hands. Posing follows
SMPL-X: ``vertex = R_global (v_rest - J_pelvis) + J_pelvis + transl``.

Canonical space (the same for every backend): a body of a given shape, posed by a named canonical
pose, with zero global rotation and zero translation, in the world frame above.

- ``"t"`` (the default): all rotations zero, the T-pose with flat hands. ``BodyModel.rest_vertices``
  gives it, and it is what zero SMPL-X parameters give (for SMPL-X and SMPL: the shaped template,
  ``v_template + shapedirs @ betas``, with no pose correctives). The pelvis sits where the body
  model puts it (its regressed or rest pelvis joint), not at the origin.
- ``"big"``: the "big pose" (Da-pose) of SHERF, TransHuman and Gaussian-avatar work: the T-pose
  with the legs spread (hips rotated 45 degrees outwards about Z) and the feet turned back 30 degrees
  towards the ground, so that the legs touch neither each other nor the crotch (with the body
  model's pose correctives, as ``forward`` gives it).

``canonical_pose(name)`` gives the pose fields of a canonical pose; ``BodyOutput.bone_transforms``
map the ``"t"`` canonical space to the posed world, per skinning bone (``BodyModel.bone_names``);
``studio.body.skinning`` poses and unposes arbitrary points from either canonical space.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import roma
import torch

from studio.body.joints import JOINT_INDEX, NUM_BODY_JOINTS, NUM_HAND_JOINTS
from studio.errors import StudioError

# Per-frame feature size of the pose fields every backend accepts.
POSE_PARAM_DIMS: dict[str, int] = {
    "global_orient": 3,
    "body_pose": 3 * NUM_BODY_JOINTS,
    "left_hand_pose": 3 * NUM_HAND_JOINTS,
    "right_hand_pose": 3 * NUM_HAND_JOINTS,
    "jaw_pose": 3,
    "transl": 3,
}

# Named canonical poses: SMPL-X joint name -> axis-angle rotation (radians); unnamed joints are zero.
CANONICAL_POSES: dict[str, dict[str, tuple[float, float, float]]] = {
    "t": {},
    "big": {
        "left_hip": (0.0, 0.0, math.radians(45.0)),
        "right_hip": (0.0, 0.0, math.radians(-45.0)),
        "left_ankle": (0.0, 0.0, math.radians(-30.0)),
        "right_ankle": (0.0, 0.0, math.radians(30.0)),
    },
}


def canonical_pose(name: str = "t") -> dict[str, torch.Tensor]:
    """The pose fields of a named canonical pose (see the module docstring).

    Args:
        name: a key of ``CANONICAL_POSES``: "t" (all zero) or "big" (legs spread).
    Returns:
        Every field of ``POSE_PARAM_DIMS`` as a [1, D] float tensor (``transl`` zero).
    """
    if name not in CANONICAL_POSES:
        raise StudioError(f"unknown canonical pose '{name}'; choose one of {', '.join(CANONICAL_POSES)}")
    pose = {key: torch.zeros(1, dim) for key, dim in POSE_PARAM_DIMS.items()}
    for joint, rotvec in CANONICAL_POSES[name].items():
        j = JOINT_INDEX[joint] - 1  # body_pose holds joints 1..21
        pose["body_pose"][0, 3 * j : 3 * j + 3] = torch.tensor(rotvec)
    return pose


@dataclasses.dataclass
class BodyOutput:
    """What a body model returns for a batch of T parameter sets."""

    vertices: torch.Tensor  # [T, V, 3] world, metres
    joints: torch.Tensor  # [T, NUM_JOINTS, 3] world, metres, in JOINT_NAMES order
    bone_transforms: torch.Tensor  # [T, B, 4, 4] canonical ("t": rest_vertices) -> posed, per skinning bone


class BodyModel(torch.nn.Module):
    """A batched, differentiable body model speaking the SMPL-X joint names.

    Subclasses set, in ``__init__``: ``faces`` [F, 3] long, ``part_labels`` [V] long (body part of each
    vertex, see ``BODY_PART_NAMES``), ``skin_weights`` [V, B] (LBS weights over the model's own
    skinning bones), ``bone_names`` (B names) and ``bone_parents`` (B parent indices, -1 for the
    root) of those bones, ``joint_valid`` [NUM_JOINTS] bool (which named joints this model has), and
    ``shape_dims`` (the per-frame size of each shape field this model adds to the pose fields).
    Class attributes tell generic code (the fitter) about the shape without naming the model:
    ``shape_field`` (the shape field a fit estimates) and ``shape_bounds`` (its valid range, or None).
    """

    name: str = ""
    shape_dims: dict[str, int] = {}
    shape_field: str = ""
    shape_bounds: tuple[float, float] | None = None
    bone_names: tuple[str, ...] = ()
    bone_parents: tuple[int, ...] = ()

    @property
    def param_dims(self) -> dict[str, int]:
        """Per-frame feature size of every parameter field this model accepts."""
        return {**POSE_PARAM_DIMS, **self.shape_dims}

    @property
    def num_vertices(self) -> int:
        return int(self.part_labels.shape[0])

    def default_shape(self) -> dict[str, torch.Tensor]:
        """The neutral value of each shape field, each [1, D]."""
        return {k: torch.zeros(1, d) for k, d in self.shape_dims.items()}

    def complete_params(self, params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Check field names and shapes; fill missing fields with their neutral values.

        Args:
            params: field name -> [T, D] tensor (D from ``param_dims``).
        Returns:
            Every field of ``param_dims`` as a float tensor [T, D] on this model's device.
        Raises:
            StudioError: an unknown field, a wrong size, or fields disagreeing on T.
        """
        unknown = set(params) - set(self.param_dims)
        if unknown:
            raise StudioError(
                f"{self.name} body model has no parameter(s) {sorted(unknown)}; "
                f"it takes {sorted(self.param_dims)}"
            )
        if not params:
            raise StudioError("no body parameters given")
        sizes = {int(v.shape[0]) for v in params.values()}
        T = max(sizes)
        if sizes - {1, T}:
            raise StudioError(f"body parameters disagree on the number of frames: {sorted(sizes)}")
        device, dtype = self.part_labels.device, self.skin_weights.dtype
        out = {}
        defaults = self.default_shape()
        for key, dim in self.param_dims.items():
            value = params.get(key)
            if value is None:
                value = defaults[key] if key in defaults else torch.zeros(1, dim)
            value = torch.as_tensor(value).to(device=device, dtype=dtype)
            if value.ndim != 2 or value.shape[1] != dim:
                raise StudioError(f"body parameter '{key}' must be [T, {dim}], got {list(value.shape)}")
            out[key] = value.expand(T, dim)
        return out

    def forward(self, params: Mapping[str, torch.Tensor]) -> BodyOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def joints(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Posed joints only, [T, NUM_JOINTS, 3] world; backends override it with a cheaper path."""
        return self(params).joints

    def rest_vertices(self, params: Mapping[str, torch.Tensor], *, canonical: str = "t") -> torch.Tensor:
        """Vertices in the canonical space: the shape of ``params`` in a canonical pose.

        Args:
            params: the same fields as ``forward``, each [T, D]; only the shape fields are read
                (pose fields and ``transl`` are ignored).
            canonical: the canonical pose, a key of ``CANONICAL_POSES``.
        Returns:
            [T, V, 3] world, metres (``"t"``: what ``forward`` gives for zero pose and translation).
        """
        pose = canonical_pose(canonical)
        p = self.complete_params(params)
        T = p["transl"].shape[0]
        shape = {k: p[k] for k in self.shape_dims}
        if all(bool((v == v[:1]).all()) for v in shape.values()):  # one shape: pose it once
            shape = {k: v[:1] for k, v in shape.items()}
        return self({**shape, **pose}).vertices.expand(T, -1, -1)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. rotvec [..., 3] -> rotation matrices [..., 3, 3]."""
    return roma.rotvec_to_rotmat(rotvec)


def matrix_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3]."""
    return roma.rotmat_to_rotvec(rotmat)


def rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest rotation turning direction a into direction b.

    Args:
        a, b: [..., 3] directions (any length; broadcast against each other).
    Returns:
        [..., 3, 3] rotation matrices: identity where a or b is (nearly) zero; for opposite
        directions, a half turn about an axis perpendicular to a.
    """
    a, b = torch.broadcast_tensors(a, b)
    a_len = a.norm(dim=-1, keepdim=True)
    b_len = b.norm(dim=-1, keepdim=True)
    a = a / a_len.clamp_min(1e-12)
    b = b / b_len.clamp_min(1e-12)
    axis = torch.linalg.cross(a, b)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(-1, keepdim=True)
    angle = torch.atan2(sin, cos)
    # (Anti)parallel directions: any axis perpendicular to a, from the coordinate axis least along a.
    least = torch.nn.functional.one_hot(a.abs().argmin(dim=-1), 3).to(a.dtype)
    perpendicular = torch.linalg.cross(a, least)
    axis = torch.where(sin < 1e-6, perpendicular, axis)
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    degenerate = (a_len < 1e-9) | (b_len < 1e-9)
    return roma.rotvec_to_rotmat(torch.where(degenerate, torch.zeros_like(axis), axis * angle))


def rigid(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Homogeneous 4x4 from rotation [..., 3, 3] and translation [..., 3]."""
    out = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=rotation.dtype, device=rotation.device)
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def full_pose_matrices(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Rotation matrices of all 55 SMPL-X joints from completed params: [T, 55, 3, 3].

    Eye rotations are identity (studio does not animate eyes).
    """
    T = params["global_orient"].shape[0]
    zeros = params["global_orient"].new_zeros(T, 3)
    rotvecs = torch.cat(
        [
            params["global_orient"],
            params["body_pose"],
            params["jaw_pose"],
            zeros,
            zeros,
            params["left_hand_pose"],
            params["right_hand_pose"],
        ],
        dim=1,
    ).reshape(T, 55, 3)
    return axis_angle_to_matrix(rotvecs)
