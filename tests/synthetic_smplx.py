"""Write a synthetic model file in the SMPL-X layout, for testing the smplx backend without the
licensed SMPL-X files.

The body is a stick figure: a tube along every bone of SMPL-X's 55-joint tree in a T-pose (Y up,
facing +Z), padded to SMPL-X's 10,475 vertices, with small random shape directions and pose
correctives, and a joint regressor that reads each joint off a vertex placed exactly on it.
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


def stick_figure(
    joints: np.ndarray,
    parents: tuple[int, ...],
    num_vertices: int,
    rng: np.random.Generator,
    *,
    thin_from: int,
    pad_owner: int,
    fixed: dict[int, tuple[tuple[float, float, float], int]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A tube along every bone, one vertex on each joint, and padding vertices around the pad owner.

    Args:
        joints: [J, 3] rest joint positions; parents: the kinematic tree (-1 for the root).
        num_vertices: the vertex count to pad to.
        thin_from: joints from this index on get thin (finger-sized) tubes.
        pad_owner: the joint that owns (and surrounds) the padding vertices.
        fixed: vertex index -> (position, owning joint) for vertices that must sit at given indices
            (surface landmarks); the rest fill the other indices in order.
    Returns:
        vertices [V, 3], faces [F, 3], owner [V] (the joint skinning each vertex), joint_vertex [J].
    """
    verts, faces, owner = [], [], []
    rings, segments = 6, 8
    for j in range(1, len(parents)):
        p = parents[j]
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
        radius = 0.05 if j < thin_from else 0.008
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
    joint_vertex = sum(len(v) for v in verts[:-1]) + np.arange(len(joints))
    owner += list(range(len(joints)))
    v = np.concatenate(verts)
    fixed = fixed or {}
    pad = num_vertices - len(fixed) - len(v)
    v = np.concatenate([v, joints[pad_owner] + rng.normal(scale=0.04, size=(pad, 3))])
    owner += [pad_owner] * pad
    # Free vertices fill the indices the fixed ones leave, in order.
    slots = np.setdiff1d(np.arange(num_vertices), np.array(sorted(fixed), dtype=np.int64))
    vertices = np.zeros((num_vertices, 3))
    owners = np.zeros(num_vertices, dtype=np.int64)
    vertices[slots], owners[slots] = v, owner
    for index, (position, joint) in fixed.items():
        vertices[index], owners[index] = position, joint
    return vertices, slots[np.array(faces, dtype=np.int64)], owners, slots[joint_vertex]


def model_arrays(
    vertices: np.ndarray, faces: np.ndarray, owner: np.ndarray, joint_vertex: np.ndarray, parents: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """The arrays every SMPL-family file has, for a stick figure: rigid skinning by the owning
    joint, and a joint regressor reading each joint off its vertex."""
    V, J = len(vertices), len(parents)
    weights = np.zeros((V, J))
    weights[np.arange(V), owner] = 1.0
    regressor = np.zeros((J, V))
    regressor[np.arange(J), joint_vertex] = 1.0
    kintree = np.stack([np.array(parents, dtype=np.int64) % (2**32), np.arange(J)])
    return {"v_template": vertices, "f": faces, "J_regressor": regressor, "weights": weights, "kintree_table": kintree}


def write_synthetic_smplx(folder: str | Path, *, seed: int = 0, num_shape: int = 20) -> Path:
    """Write ``folder/SMPLX_NEUTRAL.npz`` and return its path."""
    rng = np.random.default_rng(seed)
    head = SMPLX_JOINT_NAMES.index("head")
    v, faces, owner, joint_vertex = stick_figure(tpose_joints(), SMPLX_PARENTS, NUM_VERTICES, rng, thin_from=22, pad_owner=head)
    data = {
        **model_arrays(v, faces, owner, joint_vertex, SMPLX_PARENTS),
        "shapedirs": rng.normal(scale=0.005, size=(NUM_VERTICES, 3, num_shape)),
        "posedirs": rng.normal(scale=0.001, size=(NUM_VERTICES, 3, 486)),
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
