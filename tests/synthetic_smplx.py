"""Write a synthetic model file in the SMPL-X layout, for testing the smplx backend without the
licensed SMPL-X files.

The body is a stick figure: a tube along every bone of SMPL-X's 55-joint tree in a T-pose (Y up,
facing +Z), padded to SMPL-X's 10,475 vertices, with random shape directions, no pose correctives,
and a joint regressor that reads each joint off a vertex placed exactly on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio.body.joints import SMPLX_JOINT_NAMES, SMPLX_PARENTS

NUM_VERTICES = 10475


def tpose_joints() -> np.ndarray:
    """Plausible SMPL-X T-pose joint positions [55, 3] in metres."""
    left = {
        "hip": (0.06, -0.09, 0.0), "knee": (0.10, -0.47, 0.0), "ankle": (0.09, -0.87, -0.04),
        "foot": (0.11, -0.93, 0.08), "collar": (0.08, 0.43, 0.0), "shoulder": (0.18, 0.45, 0.0),
        "elbow": (0.44, 0.45, 0.0), "wrist": (0.70, 0.45, 0.0), "eye_smplhf": (0.03, 0.68, 0.09),
    }  # fmt: skip
    fingers = {"index": 0.03, "middle": 0.01, "pinky": -0.04, "ring": -0.015}
    pos = {"pelvis": (0, 0, 0), "spine1": (0, 0.11, 0), "spine2": (0, 0.25, 0), "spine3": (0, 0.31, 0),
           "neck": (0, 0.52, 0), "head": (0, 0.6, 0.02), "jaw": (0, 0.62, 0.05)}  # fmt: skip
    for side, sx in (("left", 1.0), ("right", -1.0)):
        for name, (x, y, z) in left.items():
            pos[f"{side}_{name}"] = (sx * x, y, z)
        for finger, z in fingers.items():
            for i in (1, 2, 3):
                pos[f"{side}_{finger}{i}"] = (sx * (0.79 + 0.03 * (i - 1)), 0.45, z)
        for i in (1, 2, 3):
            pos[f"{side}_thumb{i}"] = (sx * (0.73 + 0.025 * (i - 1)), 0.44 - 0.01 * i, 0.05 + 0.02 * i)
    return np.array([pos[n] for n in SMPLX_JOINT_NAMES], dtype=np.float64)


def write_synthetic_smplx(folder: str | Path, *, seed: int = 0, num_shape: int = 20) -> Path:
    """Write ``folder/SMPLX_NEUTRAL.npz`` and return its path."""
    rng = np.random.default_rng(seed)
    joints = tpose_joints()
    verts, faces, owner = [], [], []
    rings, segments = 6, 8
    for j in range(1, 55):
        p = SMPLX_PARENTS[j]
        a, b = joints[p], joints[j]
        axis = b - a
        length = np.linalg.norm(axis)
        if length < 1e-6:
            continue
        axis = axis / length
        ref = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        u = np.cross(axis, ref)
        u /= np.linalg.norm(u)
        w = np.cross(axis, u)
        radius = 0.05 if j < 22 else 0.008
        base = sum(len(v) for v in verts)
        ring_pts = []
        for r in range(rings):
            c = a + axis * length * r / (rings - 1)
            angles = 2 * np.pi * np.arange(segments) / segments
            ring_pts.append(c + radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * w))
        verts.append(np.concatenate(ring_pts))
        owner += [p] * (rings * segments)
        for r in range(rings - 1):
            for s in range(segments):
                i0 = base + r * segments + s
                i1 = base + r * segments + (s + 1) % segments
                i2 = i0 + segments
                i3 = i1 + segments
                faces += [(i0, i2, i1), (i1, i2, i3)]
    verts.append(joints)  # one vertex on each joint, read by the joint regressor
    joint_vertex = sum(len(v) for v in verts[:-1]) + np.arange(55)
    owner += list(range(55))
    v = np.concatenate(verts)
    pad = NUM_VERTICES - len(v)
    head = joints[SMPLX_JOINT_NAMES.index("head")]
    v = np.concatenate([v, head + rng.normal(scale=0.04, size=(pad, 3))])
    owner += [SMPLX_JOINT_NAMES.index("head")] * pad

    weights = np.zeros((NUM_VERTICES, 55))
    weights[np.arange(NUM_VERTICES), owner] = 1.0
    regressor = np.zeros((55, NUM_VERTICES))
    regressor[np.arange(55), joint_vertex] = 1.0
    kintree = np.stack([np.array(SMPLX_PARENTS, dtype=np.int64) % (2**32), np.arange(55)])
    data = {
        "v_template": v,
        "f": np.array(faces, dtype=np.int64),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "shapedirs": rng.normal(scale=0.005, size=(NUM_VERTICES, 3, num_shape)),
        "posedirs": np.zeros((NUM_VERTICES, 3, 486)),
        "hands_componentsl": np.eye(45),
        "hands_componentsr": np.eye(45),
        "hands_meanl": np.zeros(45),
        "hands_meanr": np.zeros(45),
        "lmk_faces_idx": np.zeros(51, dtype=np.int64),
        "lmk_bary_coords": np.full((51, 3), 1 / 3),
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "SMPLX_NEUTRAL.npz"
    np.savez(path, **data)
    return path
