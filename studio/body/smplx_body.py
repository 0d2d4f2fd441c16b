"""SMPL-X through the ``smplx`` package, with model files the user supplies.

SMPL-X model files are licensed (https://smpl-x.is.tue.mpg.de): studio never ships nor downloads them.
Point ``--body-model-dir`` or ``STUDIO_SMPLX_DIR`` at a folder holding ``SMPLX_NEUTRAL.npz`` (or
``smplx/SMPLX_NEUTRAL.npz``, or the ``.pkl`` variants). Hands use full axis-angle (no PCA) with
zero = flat hand, so zero pose is SMPL-X's T-pose as everywhere in studio.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from studio.body.base import BodyModel, BodyOutput, full_pose_matrices, rigid
from studio.body.joints import LANDMARK_NAMES, NUM_JOINTS, SMPLX_PARENTS, joint_to_part
from studio.errors import MissingFileError, StudioError

SMPLX_SOURCE = "https://smpl-x.is.tue.mpg.de (free registration; licensed, so studio cannot ship it)"

# studio landmark name -> key in smplx.vertex_ids.vertex_ids["smplx"]
_LANDMARK_KEYS = {
    "nose": "nose", "right_eye": "reye", "left_eye": "leye", "right_ear": "rear", "left_ear": "lear",
    "left_big_toe": "LBigToe", "left_small_toe": "LSmallToe", "left_heel": "LHeel",
    "right_big_toe": "RBigToe", "right_small_toe": "RSmallToe", "right_heel": "RHeel",
    "left_thumb_tip": "lthumb", "left_index_tip": "lindex", "left_middle_tip": "lmiddle",
    "left_ring_tip": "lring", "left_pinky_tip": "lpinky",
    "right_thumb_tip": "rthumb", "right_index_tip": "rindex", "right_middle_tip": "rmiddle",
    "right_ring_tip": "rring", "right_pinky_tip": "rpinky",
}  # fmt: skip


def smplx_model_dir(model_dir: str | Path | None = None) -> Path | None:
    """The folder to look in: the argument, else $STUDIO_SMPLX_DIR, else None."""
    if model_dir is not None:
        return Path(model_dir)
    env = os.environ.get("STUDIO_SMPLX_DIR")
    return Path(env) if env else None


def find_smplx_file(model_dir: str | Path | None = None, *, gender: str = "neutral") -> Path:
    """The SMPL-X model file in a user folder; MissingFileError naming what is expected and where from."""
    folder = smplx_model_dir(model_dir)
    name = f"SMPLX_{gender.upper()}"
    if folder is None:
        raise MissingFileError(
            f"the smplx body model needs {name}.npz: pass --body-model-dir DIR or set STUDIO_SMPLX_DIR "
            f"(get it from {SMPLX_SOURCE})"
        )
    for candidate in (folder / f"{name}.npz", folder / "smplx" / f"{name}.npz", folder / f"{name}.pkl", folder / "smplx" / f"{name}.pkl"):
        if candidate.is_file():
            return candidate
    raise MissingFileError(f"{folder / (name + '.npz')} not found (get SMPL-X from {SMPLX_SOURCE})")


class SMPLXBody(BodyModel):
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
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints warnings for small shape spaces
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
        model.requires_grad_(False)
        self.smplx = model
        parents = model.parents.tolist()
        if len(parents) != 55 or parents[1:] != list(SMPLX_PARENTS[1:]):
            raise StudioError(f"{path}: kinematic tree is not SMPL-X's 55-joint tree")
        self.shape_dims = {"betas": model.num_betas, "expression": model.num_expression_coeffs}
        self.register_buffer("faces", torch.as_tensor(model.faces.astype("int64")), persistent=False)
        self.register_buffer("skin_weights", model.lbs_weights.float(), persistent=False)
        self.register_buffer("part_labels", torch.tensor([joint_to_part(int(j)) for j in model.lbs_weights.argmax(1)]), persistent=False)
        ids = vertex_ids["smplx"]
        self.register_buffer("landmark_vertex", torch.tensor([ids[_LANDMARK_KEYS[n]] for n in LANDMARK_NAMES]), persistent=False)
        self.register_buffer("joint_valid", torch.ones(NUM_JOINTS, dtype=torch.bool), persistent=False)
        if int(self.landmark_vertex.max()) >= model.v_template.shape[0]:
            raise StudioError(f"{path}: has {model.v_template.shape[0]} vertices, fewer than SMPL-X's 10475")

    def forward(self, params: Mapping[str, torch.Tensor]) -> BodyOutput:
        """Pose the body: params as in ``param_dims``, each [T, D]. See BodyModel."""
        from smplx.lbs import batch_rigid_transform, blend_shapes, vertices2joints

        p = self.complete_params(params)
        T = p["transl"].shape[0]
        zeros = p["transl"].new_zeros(T, 3)
        out = self.smplx(
            betas=p["betas"],
            expression=p["expression"],
            global_orient=p["global_orient"],
            body_pose=p["body_pose"],
            left_hand_pose=p["left_hand_pose"],
            right_hand_pose=p["right_hand_pose"],
            jaw_pose=p["jaw_pose"],
            leye_pose=zeros,
            reye_pose=zeros,
            transl=p["transl"],
            return_verts=True,
        )
        vertices = out.vertices
        joints = torch.cat([out.joints[:, :55], vertices[:, self.landmark_vertex]], dim=1)
        shape = torch.cat([p["betas"], p["expression"]], dim=1)
        shapedirs = torch.cat([self.smplx.shapedirs, self.smplx.expr_dirs], dim=-1)
        v_shaped = self.smplx.v_template + blend_shapes(shape, shapedirs)
        rest_joints = vertices2joints(self.smplx.J_regressor, v_shaped)
        _, A = batch_rigid_transform(full_pose_matrices(p), rest_joints, self.smplx.parents)
        bone_transforms = rigid(torch.eye(3, device=A.device).expand(T, 3, 3), p["transl"])[:, None] @ A
        return BodyOutput(vertices=vertices, joints=joints, bone_transforms=bone_transforms)

    def rest_vertices(self, betas: torch.Tensor, expression: torch.Tensor | None = None) -> torch.Tensor:
        """Shaped rest (T-pose) vertices for LBS with ``bone_transforms`` (no pose correctives): [T, V, 3]."""
        from smplx.lbs import blend_shapes

        if expression is None:
            expression = betas.new_zeros(betas.shape[0], self.shape_dims["expression"])
        shapedirs = torch.cat([self.smplx.shapedirs, self.smplx.expr_dirs], dim=-1)
        return self.smplx.v_template + blend_shapes(torch.cat([betas, expression], dim=1), shapedirs)
