"""The body-model protocol shared by every backend.

World frame of every body model: metres, Y up, the body facing +Z, its left side at +X (SMPL-X's).
Pose parameters are SMPL-X's: axis-angle rotations relative to the parent, in world-aligned axes of
the rest pose, where the rest pose (all rotations zero) is a T-pose with flat hands. Posing follows
SMPL-X: ``vertex = R_global (v_rest - J_pelvis) + J_pelvis + transl``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import roma
import torch

from studio.body.joints import NUM_BODY_JOINTS, NUM_HAND_JOINTS

# Per-frame feature size of the pose fields every backend accepts.
POSE_PARAM_DIMS: dict[str, int] = {
    "global_orient": 3,
    "body_pose": 3 * NUM_BODY_JOINTS,
    "left_hand_pose": 3 * NUM_HAND_JOINTS,
    "right_hand_pose": 3 * NUM_HAND_JOINTS,
    "jaw_pose": 3,
    "transl": 3,
}


@dataclasses.dataclass
class BodyOutput:
    """What a body model returns for a batch of T parameter sets."""

    vertices: torch.Tensor  # [T, V, 3] world, metres
    joints: torch.Tensor  # [T, NUM_JOINTS, 3] world, metres, in JOINT_NAMES order
    bone_transforms: torch.Tensor  # [T, B, 4, 4] rest -> posed transform of each skinning bone


class BodyModel(torch.nn.Module):
    """A batched, differentiable body model speaking the SMPL-X joint names.

    Subclasses set, in ``__init__``: ``faces`` [F, 3] long, ``part_labels`` [V] long (body part of each
    vertex, see ``BODY_PART_NAMES``), ``skin_weights`` [V, B] (LBS weights over the model's own
    skinning bones), ``joint_valid`` [NUM_JOINTS] bool (which named joints this model has), and
    ``shape_dims`` (the per-frame size of each shape field this model adds to the pose fields).
    """

    name: str = ""
    shape_dims: dict[str, int] = {}

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
        """
        unknown = set(params) - set(self.param_dims)
        if unknown:
            raise ValueError(
                f"{self.name} body model has no parameter(s) {sorted(unknown)}; "
                f"it takes {sorted(self.param_dims)}"
            )
        if not params:
            raise ValueError("no body parameters given")
        sizes = {int(v.shape[0]) for v in params.values()}
        T = max(sizes)
        if sizes - {1, T}:
            raise ValueError(f"body parameters disagree on the number of frames: {sorted(sizes)}")
        device, dtype = self.part_labels.device, self.skin_weights.dtype
        out = {}
        defaults = self.default_shape()
        for key, dim in self.param_dims.items():
            value = params.get(key)
            if value is None:
                value = defaults[key] if key in defaults else torch.zeros(1, dim)
            value = torch.as_tensor(value).to(device=device, dtype=dtype)
            if value.ndim != 2 or value.shape[1] != dim:
                raise ValueError(f"body parameter '{key}' must be [T, {dim}], got {list(value.shape)}")
            out[key] = value.expand(T, dim)
        return out

    def forward(self, params: Mapping[str, torch.Tensor]) -> BodyOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def joints(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Posed joints only, [T, NUM_JOINTS, 3] world; backends override it with a cheaper path."""
        return self(params).joints


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. rotvec [..., 3] -> rotation matrices [..., 3, 3]."""
    return roma.rotvec_to_rotmat(rotvec)


def matrix_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3]."""
    return roma.rotmat_to_rotvec(rotmat)


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


def linear_blend_skinning(
    rest_vertices: torch.Tensor, skin_weights: torch.Tensor, bone_transforms: torch.Tensor
) -> torch.Tensor:
    """Pose points with linear blend skinning.

    Args:
        rest_vertices: [T or 1, V, 3] points in the rest pose.
        skin_weights: [V, B] weights (rows sum to 1).
        bone_transforms: [T, B, 4, 4] rest -> posed transforms.
    Returns:
        [T, V, 3] posed points.
    """
    T = bone_transforms.shape[0]
    blended = torch.einsum("vb,tbij->tvij", skin_weights, bone_transforms[:, :, :3, :])  # [T, V, 3, 4]
    rest = rest_vertices.expand(T, -1, -1)
    return torch.einsum("tvij,tvj->tvi", blended[..., :3], rest) + blended[..., 3]
