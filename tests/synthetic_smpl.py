"""Write a synthetic model file in the SMPL layout, for testing the smpl backend without the licensed
SMPL files.

The body is the stick figure of ``synthetic_smplx`` on SMPL's 24-joint tree (SMPL-X's first 22
joints, then a hand joint in each palm), padded to SMPL's 6,890 vertices, with the surface landmarks
studio reads (smplx's SMPL-H vertex ids: nose, eyes, ears, toes, heels, fingertips) at plausible
places, small random shape directions and pose correctives, and a joint regressor that reads each
joint off a vertex placed exactly on it. Like the official files it is a pickle whose joint
regressor is a scipy sparse matrix; ``fmt="npz"`` writes the same arrays as an .npz.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse
from smplx.vertex_ids import vertex_ids
from synthetic_smplx import model_arrays, stick_figure, tpose_joints

from studio.body.smpl_body import SMPL_PARENTS

NUM_VERTICES = 6890
LEFT_HAND, RIGHT_HAND, HEAD = 22, 23, 15


def smpl_tpose_joints() -> np.ndarray:
    """Plausible SMPL T-pose joint positions [24, 3] in metres."""
    joints = tpose_joints()[:22]
    hands = joints[[20, 21]] + np.array([[0.08, 0.0, 0.0], [-0.08, 0.0, 0.0]])
    return np.concatenate([joints, hands])


def landmarks() -> dict[int, tuple[tuple[float, float, float], int]]:
    """smplx's SMPL-H landmark vertex id -> (T-pose position, owning joint)."""
    left = {
        "eye": ((0.03, 0.66, 0.10), HEAD), "ear": ((0.07, 0.63, 0.0), HEAD),
        "BigToe": ((0.10, -0.95, 0.14), 10), "SmallToe": ((0.14, -0.95, 0.12), 10), "Heel": ((0.09, -0.95, -0.07), 7),
        "thumb": ((0.80, 0.40, 0.12), LEFT_HAND), "index": ((0.88, 0.45, 0.03), LEFT_HAND),
        "middle": ((0.89, 0.45, 0.01), LEFT_HAND), "ring": ((0.88, 0.45, -0.015), LEFT_HAND),
        "pinky": ((0.86, 0.45, -0.04), LEFT_HAND),
    }  # fmt: skip
    ids = vertex_ids["smplh"]
    out = {ids["nose"]: ((0.0, 0.62, 0.12), HEAD)}
    for name, ((x, y, z), joint) in left.items():
        lower = name[0].islower()
        left_key, right_key = (f"l{name}", f"r{name}") if lower else (f"L{name}", f"R{name}")
        out[ids[left_key]] = ((x, y, z), joint)
        right_joint = {LEFT_HAND: RIGHT_HAND, 10: 11, 7: 8}.get(joint, joint)
        out[ids[right_key]] = ((-x, y, z), right_joint)
    return out


def write_synthetic_smpl(folder: str | Path, *, seed: int = 0, num_shape: int = 10, fmt: str = "pkl") -> Path:
    """Write ``folder/SMPL_NEUTRAL.pkl`` (or ``.npz``) and return its path."""
    rng = np.random.default_rng(seed)
    v, faces, owner, joint_vertex = stick_figure(
        smpl_tpose_joints(), SMPL_PARENTS, NUM_VERTICES, rng, thin_from=22, pad_owner=HEAD, fixed=landmarks()
    )
    data = {
        **model_arrays(v, faces, owner, joint_vertex, SMPL_PARENTS),
        "shapedirs": rng.normal(scale=0.005, size=(NUM_VERTICES, 3, num_shape)),
        "posedirs": rng.normal(scale=0.001, size=(NUM_VERTICES, 3, 207)),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    data["f"] = data["f"].astype(np.uint32)
    data["kintree_table"] = data["kintree_table"].astype(np.uint32)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"SMPL_NEUTRAL.{fmt}"
    if fmt == "npz":
        np.savez(path, **{k: np.asarray(v) for k, v in data.items()})
    else:
        data["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=2)
    return path
