"""SMPL-X through the ``smplx`` package, with model files the user supplies.

SMPL-X model files are licensed (https://smpl-x.is.tue.mpg.de): studio never ships nor downloads them.
Point ``--body-model-dir`` or ``STUDIO_SMPLX_DIR`` at a folder holding ``SMPLX_NEUTRAL.npz`` (or
``smplx/SMPLX_NEUTRAL.npz``, or the ``.pkl`` variants). Hands use full axis-angle (no PCA) with
zero = flat hand, so zero pose is SMPL-X's T-pose as everywhere in studio. Skinning bones: SMPL-X's
55 joints; pose correctives (``posedirs``) are applied.
"""

from __future__ import annotations

from pathlib import Path

import torch

from studio.body.joints import SMPLX_JOINT_NAMES, SMPLX_PARENTS, joint_to_part
from studio.body.registry import BODY_MODELS
from studio.body.smpl_family import SMPLFamilyBody, quiet
from studio.errors import StudioError

SMPLX_SOURCE = BODY_MODELS["smplx"].source


def smplx_model_dir(model_dir: str | Path | None = None) -> Path | None:
    """The folder to look in: the argument, else $STUDIO_SMPLX_DIR, else None."""
    return BODY_MODELS["smplx"].model_dir(model_dir)


def find_smplx_file(model_dir: str | Path | None = None, *, gender: str = "neutral") -> Path:
    """The SMPL-X model file in a user folder; MissingFileError naming what is expected and where from."""
    return BODY_MODELS["smplx"].find_file(model_dir, gender=gender)


class SMPLXBody(SMPLFamilyBody):
    """SMPL-X behind studio's body-model protocol. Shape fields: ``betas`` [T, N], ``expression`` [T, M]."""

    name = "smplx"

    def __init__(
        self, model_dir: str | Path | None = None, *, gender: str = "neutral", num_betas: int = 10, num_expression: int = 10
    ) -> None:
        super().__init__()
        import smplx
        from smplx.vertex_ids import vertex_ids

        path = find_smplx_file(model_dir, gender=gender)
        self.model_file = path
        try:
            with quiet():
                model = smplx.SMPLX(
                    str(path),
                    gender=gender,
                    ext=path.suffix[1:],
                    num_betas=num_betas,
                    num_expression_coeffs=num_expression,
                    use_pca=False,
                    flat_hand_mean=True,
                )
        except (KeyError, AttributeError, ValueError, RuntimeError, IndexError) as exc:
            raise StudioError(f"{path}: not a usable SMPL-X model file ({type(exc).__name__}: {exc})") from exc
        self.shape_dims = {"betas": model.num_betas, "expression": model.num_expression_coeffs}
        self._setup(
            model,
            path,
            title="SMPL-X",
            num_vertices=10475,
            bone_names=SMPLX_JOINT_NAMES,
            bone_parents=SMPLX_PARENTS,
            bone_joint=list(range(55)),
            joint_source=list(range(55)),
            bone_part=[joint_to_part(j) for j in range(55)],
            landmark_vertex_ids=vertex_ids["smplx"],
            shape_directions=torch.cat([model.shapedirs, model.expr_dirs], dim=-1),
        )

