"""SMPL through the ``smplx`` package, with model files the user supplies.

SMPL model files are licensed (https://smpl.is.tue.mpg.de): studio never ships nor downloads them.
Point ``--body-model-dir`` or ``STUDIO_SMPL_DIR`` at a folder holding ``SMPL_NEUTRAL.pkl`` (or
``smpl/SMPL_NEUTRAL.pkl``, the ``.npz`` variants, or the official
``basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl`` / ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``).
The file is read as data: chumpy arrays and scipy sparse matrices in the official pickles load
without chumpy, and nothing in the file runs.

SMPL has 24 joints: its joints 0..21 are SMPL-X's (same names, same tree), and its ``left_hand`` /
``right_hand`` (22, 23) sit in the palms, where SMPL-X has fingers. Studio poses it with the same
fields as everywhere: ``body_pose`` [T, 63] rotates joints 1..21, the two hand joints stay at zero
rotation, and ``left_hand_pose``, ``right_hand_pose`` and ``jaw_pose`` are accepted and ignored.
In studio's joint set, SMPL has the 22 body joints and every surface landmark (read off its mesh,
which is SMPL-H's); the jaw, eyes and fingers are not valid (``joint_valid`` False) and sit at the
head and at SMPL's hand joints. Shape: ``betas`` [T, 10] (or as many as the file has).
"""

from __future__ import annotations

from pathlib import Path


from studio.body.joints import SMPLX_JOINT_NAMES, SMPLX_PARENTS, joint_to_part
from studio.body.registry import BODY_MODELS
from studio.body.smpl_family import SMPLFamilyBody, quiet, read_model_arrays
from studio.errors import StudioError

# SMPL's 24 joints (its skinning bones) and their tree: SMPL-X's first 22, then the two hands.
SMPL_JOINT_NAMES: tuple[str, ...] = SMPLX_JOINT_NAMES[:22] + ("left_hand", "right_hand")
SMPL_PARENTS: tuple[int, ...] = SMPLX_PARENTS[:22] + (20, 21)

_LEFT_WRIST, _RIGHT_WRIST, _HEAD = 20, 21, 15


def _joint_source() -> list[int]:
    """Per SMPL-X joint, the SMPL joint whose position it takes: its own for 0..21; the head for the
    jaw and eyes; SMPL's hand joint for the fingers."""
    source = []
    for j, name in enumerate(SMPLX_JOINT_NAMES):
        if j < 22:
            source.append(j)
        elif name.startswith("left_") and "eye" not in name:
            source.append(22)
        elif name.startswith("right_") and "eye" not in name:
            source.append(23)
        else:
            source.append(_HEAD)
    return source


class SMPLBody(SMPLFamilyBody):
    """SMPL behind studio's body-model protocol (see the module docstring). Shape field: ``betas`` [T, N]."""

    name = "smpl"

    def __init__(self, model_dir: str | Path | None = None, *, gender: str = "neutral", num_betas: int = 10) -> None:
        super().__init__()
        import smplx
        from smplx.utils import Struct
        from smplx.vertex_ids import vertex_ids

        path = BODY_MODELS["smpl"].find_file(model_dir, gender=gender)
        self.model_file = path
        arrays = read_model_arrays(path)
        try:
            with quiet():
                model = smplx.SMPL(str(path), data_struct=Struct(**arrays), num_betas=num_betas, gender=gender)
        except (KeyError, AttributeError, ValueError, RuntimeError, IndexError, TypeError) as exc:
            raise StudioError(f"{path}: not a usable SMPL model file ({type(exc).__name__}: {exc})") from exc
        self.shape_dims = {"betas": model.num_betas}
        self._setup(
            model,
            path,
            title="SMPL",
            num_vertices=6890,
            bone_names=SMPL_JOINT_NAMES,
            bone_parents=SMPL_PARENTS,
            bone_joint=list(range(22)) + [-1, -1],
            joint_source=_joint_source(),
            bone_part=[joint_to_part(j) for j in range(22)] + [joint_to_part(_LEFT_WRIST), joint_to_part(_RIGHT_WRIST)],
            landmark_vertex_ids=vertex_ids["smplh"],
            shape_directions=model.shapedirs,
        )
