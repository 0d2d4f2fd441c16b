"""The embedded default body model: Anny (PyPI ``anny``; Apache-2.0 code, CC0 data in the wheel).

Anny is a MakeHuman-based body with 104 bones, Z up and facing -Y, whose rest pose is an A-pose. This
backend puts it in studio's world frame (Y up, facing +Z), maps its bones to the SMPL-X joint names,
and re-bases its pose so that all-zero SMPL-X rotations give a T-pose, as in SMPL-X. Its shape is
Anny's six phenotype values (gender, age, muscle, weight, height, proportions; 0..1, 0.5 neutral),
stored in the condition as ``phenotype``. Only Anny's own topology is used: its SMPL/SMPL-X
topologies and interop tables download non-commercial data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import roma
import torch

from studio.body.base import BodyModel, BodyOutput, full_pose_matrices, rigid, rotation_between
from studio.body.joints import (
    JOINT_INDEX,
    LANDMARK_NAMES,
    NUM_JOINTS,
    SMPLX_JOINT_NAMES,
    joint_to_part,
)
from studio.body.skinning import pose_points

logger = logging.getLogger(__name__)

# Anny frame (Z up, facing -Y) -> studio frame (Y up, facing +Z): (x, y, z) -> (x, z, -y).
ANNY_TO_WORLD = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# SMPL-X joint -> Anny bone whose head is the joint and whose rotation the joint drives.
_SIDE = {"left": "L", "right": "R"}
_FINGERS = {"thumb": 1, "index": 2, "middle": 3, "ring": 4, "pinky": 5}


def _smplx_to_anny_bones() -> dict[str, tuple[str, ...]]:
    mapping: dict[str, tuple[str, ...]] = {
        "pelvis": ("root",),
        "spine1": ("spine04",),
        "spine2": ("spine02",),
        "spine3": ("spine01",),
        "neck": ("neck01",),
        "head": ("head",),
    }
    for side, s in _SIDE.items():
        mapping.update(
            {
                f"{side}_hip": (f"upperleg01.{s}",),
                f"{side}_knee": (f"lowerleg01.{s}",),
                f"{side}_ankle": (f"foot.{s}",),
                # The foot joint bends the toes: Anny has one chain per toe. Its position is the middle toe's.
                f"{side}_foot": tuple(f"toe{k}-1.{s}" for k in (3, 1, 2, 4, 5)),
                f"{side}_collar": (f"shoulder01.{s}",),
                f"{side}_shoulder": (f"upperarm01.{s}",),
                f"{side}_elbow": (f"lowerarm01.{s}",),
                f"{side}_wrist": (f"wrist.{s}",),
                f"{side}_eye_smplhf": (f"eye.{s}",),
            }
        )
        for finger, k in _FINGERS.items():
            for i in (1, 2, 3):
                mapping[f"{side}_{finger}{i}"] = (f"finger{k}-{i}.{s}",)
    return mapping


SMPLX_TO_ANNY = _smplx_to_anny_bones()

# Bones re-based from Anny's A-pose to a T-pose, each aimed along a world direction (Anny frame) at the
# head of its child bone, in chain order.
_T_POSE_AIMS = []
for _side, _s in _SIDE.items():
    _x = 1.0 if _side == "left" else -1.0
    _T_POSE_AIMS += [
        (f"upperarm01.{_s}", f"upperarm02.{_s}", (_x, 0.0, 0.0)),
        (f"upperarm02.{_s}", f"lowerarm01.{_s}", (_x, 0.0, 0.0)),
        (f"lowerarm01.{_s}", f"lowerarm02.{_s}", (_x, 0.0, 0.0)),
        (f"lowerarm02.{_s}", f"wrist.{_s}", (_x, 0.0, 0.0)),
        (f"wrist.{_s}", f"finger3-1.{_s}", (_x, 0.0, 0.0)),
        (f"upperleg01.{_s}", f"upperleg02.{_s}", (0.0, 0.0, -1.0)),
        (f"upperleg02.{_s}", f"lowerleg01.{_s}", (0.0, 0.0, -1.0)),
        (f"lowerleg01.{_s}", f"lowerleg02.{_s}", (0.0, 0.0, -1.0)),
        (f"lowerleg02.{_s}", f"foot.{_s}", (0.0, 0.0, -1.0)),
    ]


def anny_cache_dir() -> Path:
    """Where Anny's ~790 MB model cache lives: $ANNY_CACHE_DIR, else ~/.cache/studio/anny."""
    return Path(os.environ.get("ANNY_CACHE_DIR", Path.home() / ".cache" / "studio" / "anny"))


def anny_cache_ready() -> bool:
    """Whether Anny's cache has been built (so the first model load is fast)."""
    d = anny_cache_dir()
    return d.is_dir() and any(d.rglob("build_compact_model_data_*"))


class AnnyBody(BodyModel):
    """Anny behind studio's body-model protocol. Shape field: ``phenotype`` [T, 6], each 0..1.

    Skinning bones: Anny's 104 bones (``bone_names``); ``bone_transforms`` take the T-pose canonical
    space to the posed world. Anny skins from its own A-pose rest, so reposing the T-pose with them
    needs ``studio.body.skinning``'s offsets near the shoulders and hips.
    """

    name = "anny"
    shape_field = "phenotype"
    shape_bounds = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        os.environ.setdefault("ANNY_CACHE_DIR", str(anny_cache_dir()))
        import anny  # deferred: importing anny is slow and pulls in warp
        import anny.paths

        anny.paths.set_anny_cache_path(anny_cache_dir())
        if not anny_cache_ready():
            logger.info("building the Anny model cache in %s (once, about 2 minutes)", anny_cache_dir())
        model = anny.Anny(skinning_method="lbs").to(torch.float32)
        model.requires_grad_(False)
        self.anny = model
        self.phenotype_labels = tuple(model.phenotype_labels)
        self.shape_dims = {"phenotype": len(self.phenotype_labels)}
        bones = list(model.bone_labels)
        self.bone_names = tuple(bones)
        parents = [int(p) for p in model.bone_parents]
        self.bone_parents = tuple(parents)
        index = {b: i for i, b in enumerate(bones)}

        self.register_buffer("faces", model.faces.long().clone(), persistent=False)
        self.register_buffer("skin_weights", model.dense_vertex_bone_weights.float(), persistent=False)
        self.register_buffer("to_world", ANNY_TO_WORLD.clone(), persistent=False)

        # Joints: each SMPL-X joint is the head of its first mapped bone.
        joint_bone = torch.full((NUM_JOINTS,), -1, dtype=torch.long)
        for j, name in enumerate(SMPLX_JOINT_NAMES):
            if name in SMPLX_TO_ANNY:
                joint_bone[j] = index[SMPLX_TO_ANNY[name][0]]
        # Which SMPL-X joint's rotation drives each bone (-1: none).
        bone_joint = torch.full((len(bones),), -1, dtype=torch.long)
        for j, name in enumerate(SMPLX_JOINT_NAMES):
            for b in SMPLX_TO_ANNY.get(name, ()):
                bone_joint[index[b]] = j
        # Part label of each vertex: the SMPL-X joint driving its dominant bone (nearest mapped ancestor).
        bone_part = []
        for b in range(len(bones)):
            a = b
            while bone_joint[a] < 0:
                a = parents[a]
            bone_part.append(joint_to_part(int(bone_joint[a])))
        dominant = self.skin_weights.argmax(dim=1)
        self.register_buffer("part_labels", torch.tensor(bone_part)[dominant], persistent=False)
        bone_joint[index["root"]] = -1  # the global orientation is applied in the world frame
        self.register_buffer("bone_joint", bone_joint, persistent=False)

        # Reference (A-pose) skeleton and mesh for the default phenotype.
        with torch.no_grad():
            ref = model(torch.eye(4).expand(1, len(bones), 4, 4).clone())
        ref_heads = ref["bone_poses"][0, :, :3, 3]
        ref_vertices = ref["vertices"][0]

        # T-pose re-basing: per-bone local deltas A and the parents' accumulated rotations P.
        accumulated = torch.eye(3).repeat(len(bones), 1, 1)
        local = torch.eye(3).repeat(len(bones), 1, 1)
        aims = {b: (c, torch.tensor(d)) for b, c, d in _T_POSE_AIMS}
        for b in range(len(bones)):  # Anny lists parents before children
            p = parents[b]
            parent_rot = accumulated[p] if p >= 0 else torch.eye(3)
            if bones[b] in aims:
                child, target = aims[bones[b]]
                direction = parent_rot @ (ref_heads[index[child]] - ref_heads[b])
                align = rotation_between(direction, target)
                local[b] = parent_rot.T @ align @ parent_rot
            accumulated[b] = parent_rot @ local[b]
        parent_accumulated = torch.stack(
            [accumulated[p] if p >= 0 else torch.eye(3) for p in parents]
        )
        self.register_buffer("tpose_local", local, persistent=False)
        self.register_buffer("tpose_parent", parent_accumulated, persistent=False)

        # Surface landmarks: vertex indices found on the reference mesh, or bone heads for the eyes.
        self.register_buffer("joint_bone", joint_bone, persistent=False)
        landmark_vertex = torch.full((len(LANDMARK_NAMES),), -1, dtype=torch.long)
        for i, lm in enumerate(LANDMARK_NAMES):
            vid = self._find_landmark(lm, ref_vertices, ref_heads, dominant, index)
            if vid is None:
                joint_bone[JOINT_INDEX[lm]] = index["eye." + ("L" if lm.startswith("left") else "R")]
            else:
                landmark_vertex[i] = vid
        self.register_buffer("landmark_vertex", landmark_vertex, persistent=False)
        valid = joint_bone >= 0
        valid[len(SMPLX_JOINT_NAMES) :] = True
        self.register_buffer("joint_valid", valid, persistent=False)

    @staticmethod
    def _find_landmark(name, verts, heads, dominant, index) -> int | None:
        """Vertex index of a named surface landmark on Anny's reference mesh (Anny frame), or None
        for landmarks taken from a bone head (the eyes)."""
        side = "L" if name.startswith("left") else "R"
        sign = 1.0 if side == "L" else -1.0

        def on_bones(prefixes):
            ids = [i for b, i in index.items() if any(b.startswith(p) and b.endswith(side) for p in prefixes)]
            return torch.isin(dominant, torch.tensor(ids))

        head_ids = torch.tensor([index["head"]])
        if name == "nose":
            mask = torch.isin(dominant, head_ids) & (verts[:, 0].abs() < 0.01)
            score = -verts[:, 1]  # most forward
        elif name.endswith("_eye"):
            return None
        elif name.endswith("_ear"):
            eye_z = heads[index["eye.L"], 2]
            mask = torch.isin(dominant, head_ids) & ((verts[:, 2] - (eye_z - 0.03)).abs() < 0.02)
            score = sign * verts[:, 0]
        elif name.endswith("_big_toe"):
            mask, score = on_bones(["toe1-"]), -verts[:, 1]
        elif name.endswith("_small_toe"):
            mask, score = on_bones(["toe5-"]), -verts[:, 1]
        elif name.endswith("_heel"):
            foot = heads[index[f"foot.{side}"]]
            mask = on_bones(["foot."]) & (verts[:, 2] < foot[2])
            score = verts[:, 1] - 0.3 * (verts[:, 2] - foot[2])  # back and low
        elif name.endswith("_tip"):
            finger = name.split("_")[1]
            bone = f"finger{_FINGERS[finger]}-3.{side}"
            mask = dominant == index[bone]
            score = (verts - heads[index[bone]]).norm(dim=1)
        else:  # pragma: no cover - LANDMARK_NAMES is fixed
            raise KeyError(name)
        score = torch.where(mask, score, torch.full_like(score, -float("inf")))
        return int(score.argmax())

    def default_shape(self) -> dict[str, torch.Tensor]:
        return {"phenotype": torch.full((1, self.shape_dims["phenotype"]), 0.5)}

    def _anny_deltas(self, pose: torch.Tensor) -> torch.Tensor:
        """SMPL-X joint rotations [T, 55, 3, 3] (world frame) -> Anny local-ref deltas [T, B, 4, 4]."""
        C = self.to_world
        pose_anny = C.T @ pose @ C  # the same rotations expressed in Anny's axes
        T = pose.shape[0]
        eye = torch.eye(3, device=pose.device, dtype=pose.dtype)
        mapped = self.bone_joint >= 0
        R = eye.expand(T, len(self.bone_names), 3, 3).clone()
        R[:, mapped] = pose_anny[:, self.bone_joint[mapped]]
        P = self.tpose_parent
        D = P.transpose(-1, -2) @ R @ P @ self.tpose_local
        return rigid(D, torch.zeros(*D.shape[:-2], 3, device=D.device, dtype=D.dtype))

    def forward(self, params: Mapping[str, torch.Tensor]) -> BodyOutput:
        """Pose the body.

        Args:
            params: SMPL-X pose fields and ``phenotype``, each [T, D] (see ``param_dims``).
        Returns:
            BodyOutput with vertices [T, V, 3], joints [T, NUM_JOINTS, 3], bone_transforms [T, 104, 4, 4].
        """
        return self._pose(params, all_vertices=True)

    def joints(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Joints only [T, NUM_JOINTS, 3]: skins just the landmark vertices, several times faster than
        ``forward`` (what fitting calls in its loop)."""
        return self._pose(params, all_vertices=False).joints

    def _pose(self, params: Mapping[str, torch.Tensor], *, all_vertices: bool) -> BodyOutput:
        p = self.complete_params(params)
        phenotype = p["phenotype"]
        if phenotype.stride(0) == 0 or bool((phenotype == phenotype[:1]).all()):
            phenotype = phenotype[:1]  # one shape for all frames: build the rest model once
        rotations = full_pose_matrices(p)  # [T, 55, 3, 3]
        anny = self.anny
        rest = self._rest_model(phenotype, all_vertices=all_vertices)
        T = rotations.shape[0]
        lm = self.landmark_vertex >= 0
        if not all_vertices and phenotype.shape[0] == 1:  # the fast path: one shape, joints only
            heads_anny, landmarks_anny = self._compact_chain(rotations, rest)
        else:
            deltas = self._anny_deltas(rotations)
            local_skinning, bone_poses = anny.get_bone_transforms(deltas, rest["rest_bone_poses"])
            heads_anny = bone_poses[:, :, :3, 3]
            if all_vertices:
                vertices_anny = anny.get_skinned_vertices(rest["rest_vertices"].expand(T, -1, -1), local_skinning)
                landmarks_anny = vertices_anny[:, self.landmark_vertex[lm]]
            else:
                ids = self.landmark_vertex[lm]
                rest_landmarks = rest["rest_vertices"][:, ids].expand(T, -1, -1)
                landmarks_anny = pose_points(rest_landmarks, self.skin_weights[ids], local_skinning)
        pelvis = rest["rest_bone_heads"][:, 0] @ self.to_world.T  # [T or 1, 3] in the world frame
        G = rigid(rotations[:, 0], pelvis + p["transl"])  # [T, 4, 4]
        heads = self._to_world_points(heads_anny, G)
        joints = heads[:, self.joint_bone.clamp_min(0)]
        lm_rows = torch.nonzero(lm).squeeze(1) + len(SMPLX_JOINT_NAMES)
        joints[:, lm_rows] = self._to_world_points(landmarks_anny, G)
        joints[:, ~self.joint_valid] = joints[:, JOINT_INDEX["head"], None].clone()
        if not all_vertices:
            return BodyOutput(vertices=None, joints=joints, bone_transforms=None)
        C4 = rigid(self.to_world, torch.zeros(3, device=G.device))
        # Anny's skinning transforms take its A-pose rest to the pose; the T-pose's (zero rotations,
        # zero translation) taken off makes them canonical (T-pose) -> posed.
        tpose = rigid(torch.eye(3, device=G.device).expand_as(G[:, :3, :3]), pelvis)[:, None] @ C4 @ self._tpose_skinning(rest)
        bone_transforms = G[:, None] @ C4 @ local_skinning @ torch.linalg.inv(tpose)
        vertices = self._to_world_points(vertices_anny, G)
        return BodyOutput(vertices=vertices, joints=joints, bone_transforms=bone_transforms)

    def _tpose_skinning(self, rest: dict[str, torch.Tensor]) -> torch.Tensor:
        """Anny's skinning transforms [T or 1, B, 4, 4] (Anny frame, root at the origin) of the
        T-pose, for a rest model from ``_rest_model`` (kept with it when it is cached)."""
        if "tpose_skinning" not in rest:
            zero = self._anny_deltas(torch.eye(3, device=self.to_world.device).expand(1, 55, 3, 3))
            rest["tpose_skinning"] = self.anny.get_bone_transforms(zero, rest["rest_bone_poses"])[0]
        return rest["tpose_skinning"]

    def _compact_chain_structure(self) -> dict:
        """Once: the bones the joints-only path needs (the root, every bone a SMPL-X joint drives, and
        the bones skinning the landmark vertices), each hung from its nearest such ancestor with the
        constant rotation of the undriven bones in between."""
        parents = [int(x) for x in self.anny.bone_parents]
        lm_ids = self.landmark_vertex[self.landmark_vertex >= 0]
        lm_bones = torch.nonzero(self.skin_weights[lm_ids].sum(0) > 0).squeeze(1).tolist()
        needed = sorted({0, *torch.nonzero(self.bone_joint >= 0).squeeze(1).tolist(), *lm_bones, *self.joint_bone[self.joint_bone >= 0].tolist()})
        node_of = {b: i for i, b in enumerate(needed)}
        L = self.tpose_local  # [B, 3, 3]: the constant delta of an undriven bone
        node_parent, const_rot, path_rows, path_bones, path_mats, depth = [-1], [torch.eye(3)], [], [], [], [0]
        for n, b in enumerate(needed[1:], start=1):
            path = [b]
            a = parents[b]
            while a not in node_of:
                path.append(a)
                a = parents[a]
            path.reverse()  # from just below the ancestor node down to b
            prefix = torch.eye(3)
            for k in path:  # offset o = sum of prefix(D) q_k; rotation C = product of the undriven D's
                path_rows.append(n)
                path_bones.append(k)
                path_mats.append(prefix.clone())
                if k != b:
                    prefix = prefix @ L[k]
            node_parent.append(node_of[a])
            const_rot.append(prefix)
            depth.append(depth[node_of[a]] + 1)
        levels = [torch.tensor([n for n in range(len(needed)) if depth[n] == d]) for d in range(1, max(depth) + 1)]
        landmark_weights = self.skin_weights[lm_ids][:, needed]
        return {
            "bones": torch.tensor(needed),
                "parent": torch.tensor(node_parent),
            "const_rot": torch.stack(const_rot),
            "path_rows": torch.tensor(path_rows),
            "path_bones": torch.tensor(path_bones),
            "path_mats": torch.stack(path_mats),
            "levels": levels,
            "landmark_weights": landmark_weights / landmark_weights.sum(1, keepdim=True),
        }

    def _compact_chain(self, rotations: torch.Tensor, rest: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Bone heads [T, B, 3] (valid at the needed bones) and landmark vertices [T, L, 3] in Anny's
        frame, by Anny's local-ref kinematics restricted to the needed bones:
        V_c = V_p D_c and head_c = head_p + V_p q_c along the chain, V being a bone's posed
        orientation times its reference orientation's transpose."""
        if not hasattr(self, "_chain"):
            self._chain = self._compact_chain_structure()
        c = self._chain
        anny = self.anny
        R = rest["rest_bone_poses"][:, :, :3, :3]  # [1, B, 3, 3]
        h = rest["rest_bone_heads"]  # [1, B, 3]
        U = anny.reference_bone_orientations if anny.reference_bone_orientations is not None else R[0]
        parents = torch.as_tensor([max(int(x), 0) for x in anny.bone_parents])
        A = U @ R[0].transpose(-1, -2)
        A[0] = torch.eye(3, dtype=A.dtype)
        q = (A[parents] @ (h[0] - h[0, parents])[..., None])[..., 0]  # [B, 3] reference-frame offsets
        q[0] = 0.0
        offsets = torch.zeros(len(c["bones"]), 3, dtype=q.dtype).index_add(
            0, c["path_rows"], (c["path_mats"] @ q[c["path_bones"]][..., None])[..., 0]
        )
        # Per-node delta: driven bones from their SMPL-X joint, the rest constant.
        bones = c["bones"]
        joint = self.bone_joint[bones]
        T = rotations.shape[0]
        C = self.to_world
        D = self.tpose_local[bones].expand(T, -1, -1, -1).clone()
        driven = joint >= 0
        Rj = C.T @ rotations[:, joint[driven]] @ C
        P = self.tpose_parent[bones[driven]]
        D[:, driven] = P.transpose(-1, -2) @ Rj @ P @ self.tpose_local[bones[driven]]
        K = c["const_rot"] @ D  # [T, N, 3, 3]: V_n = V_a K_n
        Vt = torch.zeros(T, len(bones), 3, 3, dtype=D.dtype).index_copy(1, torch.tensor([0]), (U[0].T @ D[:, 0])[:, None])
        Ht = torch.zeros(T, len(bones), 3, dtype=D.dtype)
        for level in c["levels"]:
            a = c["parent"][level]
            Va = Vt[:, a]
            Ht = Ht.index_copy(1, level, Ht[:, a] + (Va @ offsets[level][..., None])[..., 0])
            Vt = Vt.index_copy(1, level, Va @ K[:, level])
        # Landmarks: LBS with the needed bones' skinning transforms (posed x rest inverse).
        lm_ids = self.landmark_vertex[self.landmark_vertex >= 0]
        rot = Vt @ U[bones] @ R[0, bones].transpose(-1, -2)  # [T, N, 3, 3]
        trans = Ht - (rot @ h[0, bones][..., None])[..., 0]
        rest_lm = rest["rest_vertices"][0, lm_ids]  # [L, 3]
        w = c["landmark_weights"]  # [L, N]
        posed = torch.einsum("ln,tnij,lj->tli", w, rot, rest_lm) + torch.einsum("ln,tni->tli", w, trans)
        heads_all = torch.zeros(T, len(self.bone_names), 3, dtype=D.dtype).index_copy(1, bones, Ht)
        return heads_all, posed

    def _rest_model(self, phenotype: torch.Tensor, *, all_vertices: bool = True) -> dict[str, torch.Tensor]:
        """Anny's rest skeleton and rest vertices (all, or only the landmark vertices as
        ``rest_vertices[:, landmark_vertex[valid]]`` laid out in place, for the joints-only path)
        for phenotypes [T or 1, 6]. The last constant phenotype's is kept, so that fitting a video
        with a fixed shape skips rebuilding it at every step."""
        key = None
        if not phenotype.requires_grad:
            key = (tuple(phenotype.shape), phenotype.device, all_vertices, tuple(phenotype.detach().cpu().flatten().tolist()))
            cached = getattr(self, "_rest_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
        anny = self.anny
        _, pheno, local_changes, facial = anny.get_tensor_inputs(None, phenotype, None, None)
        coeffs = anny._get_phenotype_blendshape_coefficients(pheno, local_changes, facial)
        if all_vertices or anny.bone_orientation != "cached":
            rest = anny.get_rest_model(coeffs)
        else:  # Anny's cached rest model, for the landmark vertices only (what fitting needs)
            ids = self.landmark_vertex[self.landmark_vertex >= 0]
            vertices = torch.zeros(coeffs.shape[0], self.num_vertices, 3, dtype=coeffs.dtype, device=coeffs.device)
            vertices[:, ids] = anny.template_vertices[ids] + torch.einsum("cpd,bc->bpd", anny.blendshapes[:, ids], coeffs)
            heads = anny.template_bone_heads[None] + torch.einsum("ckd,bc->bkd", anny.bone_heads_blendshapes, coeffs)
            M = anny.bone_template_orientation_matrices[None] + torch.einsum("ba,akij->bkij", coeffs, anny.bone_orientation_blendshapes)
            orientation = roma.special_procrustes(M)
            if anny.rest_orientation_refiner is not None:
                orientation = anny.rest_orientation_refiner(orientation, heads)
            poses = roma.Rigid(linear=orientation, translation=heads).to_homogeneous()
            if anny.root_identity_orientation:
                poses[:, 0, :3, :3] = torch.eye(3, dtype=poses.dtype, device=poses.device)
            rest = {"rest_vertices": vertices, "rest_bone_heads": heads, "rest_bone_poses": poses}
        if key is not None:
            self._rest_cache = (key, rest)
        return rest

    def _to_world_points(self, points: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """Anny-frame points with the root at the origin [T, N, 3] -> world [T, N, 3]."""
        world = points @ self.to_world.T
        return world @ G[:, :3, :3].transpose(-1, -2) + G[:, None, :3, 3]
