"""Body models behind one protocol: ``anny`` (embedded default) and ``smplx`` (user-supplied files)."""

from __future__ import annotations

import functools
from pathlib import Path

from studio.body.base import POSE_PARAM_DIMS, BodyModel, BodyOutput, linear_blend_skinning
from studio.body.joints import BODY_PART_COLORS, BODY_PART_NAMES, JOINT_INDEX, JOINT_NAMES, NUM_JOINTS
from studio.errors import StudioError

BODY_MODELS = ("anny", "smplx")

__all__ = [
    "BODY_MODELS",
    "BODY_PART_COLORS",
    "BODY_PART_NAMES",
    "BodyModel",
    "BodyOutput",
    "JOINT_INDEX",
    "JOINT_NAMES",
    "NUM_JOINTS",
    "body_model_param_dims",
    "linear_blend_skinning",
    "load_body_model",
]


@functools.lru_cache(maxsize=4)
def _load(name: str, model_dir: str | None) -> BodyModel:
    if name == "anny":
        from studio.body.anny_body import AnnyBody

        return AnnyBody()
    if name == "smplx":
        from studio.body.smplx_body import SMPLXBody

        return SMPLXBody(model_dir)
    raise StudioError(f"unknown body model '{name}'; choose one of {', '.join(BODY_MODELS)}")


def load_body_model(name: str = "anny", *, model_dir: str | Path | None = None) -> BodyModel:
    """A body model by name (cached per process).

    Args:
        name: "anny" (embedded, default) or "smplx".
        model_dir: for smplx, the folder holding SMPLX_NEUTRAL.npz (else $STUDIO_SMPLX_DIR).
    """
    if name == "smplx" and model_dir is None:
        from studio.body.smplx_body import smplx_model_dir

        model_dir = smplx_model_dir()
    return _load(name, None if model_dir is None else str(Path(model_dir).resolve()))


def body_model_param_dims(name: str) -> dict[str, int | None]:
    """The parameter fields a body model takes, with their per-frame size (None: any size), without
    loading the model."""
    if name == "anny":
        return {**POSE_PARAM_DIMS, "phenotype": 6}
    if name == "smplx":
        return {**POSE_PARAM_DIMS, "betas": None, "expression": None}
    raise StudioError(f"unknown body model '{name}'; choose one of {', '.join(BODY_MODELS)}")
