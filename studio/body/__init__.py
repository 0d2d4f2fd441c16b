"""Body models behind one protocol, registered in one table (``BODY_MODELS``): ``anny`` (embedded
default), ``smplx`` and ``smpl`` (user-supplied files). See ``studio.body.base`` for the protocol
and the canonical space, and ``studio.body.skinning`` for posing arbitrary points."""

from __future__ import annotations

from studio.body.base import (
    CANONICAL_POSES,
    POSE_PARAM_DIMS,
    BodyModel,
    BodyOutput,
    canonical_pose,
    rotation_between,
)
from studio.body.joints import BODY_PART_COLORS, BODY_PART_NAMES, JOINT_INDEX, JOINT_NAMES, NUM_JOINTS
from studio.body.registry import (
    BODY_MODELS,
    BodyModelSpec,
    body_model_param_dims,
    body_model_spec,
    load_body_model,
)
from studio.body.skinning import (
    Skinning,
    body_skinning,
    point_skin_weights,
    pose_points,
    unpose_points,
)

__all__ = [
    "BODY_MODELS",
    "BODY_PART_COLORS",
    "BODY_PART_NAMES",
    "CANONICAL_POSES",
    "POSE_PARAM_DIMS",
    "BodyModel",
    "BodyModelSpec",
    "BodyOutput",
    "JOINT_INDEX",
    "JOINT_NAMES",
    "NUM_JOINTS",
    "Skinning",
    "body_model_param_dims",
    "body_model_spec",
    "body_skinning",
    "canonical_pose",
    "load_body_model",
    "point_skin_weights",
    "pose_points",
    "rotation_between",
    "unpose_points",
]
