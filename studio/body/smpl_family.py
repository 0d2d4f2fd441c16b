"""What the SMPL-family backends (``smplx``, ``smpl``) share: posing with the smplx package's LBS
building blocks, their joints mapped to studio's joint set, and reading the user's model files
without running code from them.

Posing is SMPL's: ``v = sum_b w_b A_b (v_template + shapedirs @ shape + posedirs @ (R - I))``, with
the joints regressed from the shaped template (smplx's ``lbs``, written out so that the per-bone
transforms ``A_b`` come from the same pass as the vertices).
"""

from __future__ import annotations

import codecs
import contextlib
import copyreg
import io
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from studio.body.base import BodyModel, BodyOutput, full_pose_matrices, rigid
from studio.body.joints import LANDMARK_NAMES, NUM_JOINTS
from studio.body.skinning import pose_points
from studio.errors import StudioError

# studio landmark name -> key in smplx.vertex_ids.vertex_ids["smplx" or "smplh"] (SMPL shares SMPL-H's mesh)
LANDMARK_KEYS = {
    "nose": "nose", "right_eye": "reye", "left_eye": "leye", "right_ear": "rear", "left_ear": "lear",
    "left_big_toe": "LBigToe", "left_small_toe": "LSmallToe", "left_heel": "LHeel",
    "right_big_toe": "RBigToe", "right_small_toe": "RSmallToe", "right_heel": "RHeel",
    "left_thumb_tip": "lthumb", "left_index_tip": "lindex", "left_middle_tip": "lmiddle",
    "left_ring_tip": "lring", "left_pinky_tip": "lpinky",
    "right_thumb_tip": "rthumb", "right_index_tip": "rindex", "right_middle_tip": "rmiddle",
    "right_ring_tip": "rring", "right_pinky_tip": "rpinky",
}  # fmt: skip

# Largest array a model file may make studio allocate (SMPL-X's biggest is about 15 million entries).
_MAX_ARRAY_ELEMENTS = 200_000_000


class SMPLFamilyBody(BodyModel):
    """A SMPL-family model behind studio's body-model protocol (see the module docstring).

    Subclasses load the smplx package's module and call ``_setup``. Shape field: ``betas``
    (plus any other shape fields, in the order of ``shape_dims``, matching ``shape_directions``).
    """

    shape_field = "betas"

    def _setup(
        self,
        layer: torch.nn.Module,
        path: Path,
        *,
        title: str,
        num_vertices: int,
        bone_names: tuple[str, ...],
        bone_parents: tuple[int, ...],
        bone_joint: list[int],
        joint_source: list[int],
        bone_part: list[int],
        landmark_vertex_ids: Mapping[str, int],
        shape_directions: torch.Tensor,
    ) -> None:
        """Check the loaded model and register what posing needs.

        Args:
            layer: the smplx package's module (buffers v_template, posedirs, J_regressor, parents,
                lbs_weights; ``faces``).
            path: the model file, for error messages; title: the model's name in them.
            num_vertices: the model's vertex count (its landmarks are vertex ids of its mesh).
            bone_names, bone_parents: the model's joints (its skinning bones) and their tree.
            bone_joint: per bone, the SMPL-X joint whose rotation drives it (-1: none, held at zero).
            joint_source: per SMPL-X joint (55), the bone whose position it takes.
            bone_part: per bone, the body part (``BODY_PART_NAMES`` index) its vertices belong to.
            landmark_vertex_ids: smplx's vertex ids of the surface landmarks for this mesh.
            shape_directions: [V, 3, S] shape blend shapes of all shape fields, in ``shape_dims`` order.
        """
        layer.requires_grad_(False)
        self.layer = layer
        J = len(bone_names)
        if layer.parents.tolist()[1:] != list(bone_parents[1:]):
            raise StudioError(f"{path}: kinematic tree is not {title}'s {J}-joint tree")
        V = int(layer.v_template.shape[0])
        if V != num_vertices:
            raise StudioError(f"{path}: has {V} vertices; {title} has {num_vertices}")
        expected = {
            "v_template": (layer.v_template, (V, 3)),
            "shapedirs": (shape_directions, (V, 3, shape_directions.shape[-1])),
            "posedirs": (layer.posedirs, ((J - 1) * 9, V * 3)),
            "J_regressor": (layer.J_regressor, (J, V)),
            "weights": (layer.lbs_weights, (V, J)),
        }
        for key, (value, shape) in expected.items():
            if tuple(value.shape) != shape:
                raise StudioError(f"{path}: '{key}' has shape {list(value.shape)}, {title} needs {list(shape)}")
            if not bool(torch.isfinite(value).all()):
                raise StudioError(f"{path}: '{key}' holds values that are not finite")
        faces = torch.as_tensor(np.asarray(layer.faces).astype("int64"))
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.numel() == 0 or int(faces.min()) < 0 or int(faces.max()) >= V:
            raise StudioError(f"{path}: 'f' must be triangles [F, 3] indexing its {V} vertices")
        landmarks = torch.tensor([landmark_vertex_ids[LANDMARK_KEYS[n]] for n in LANDMARK_NAMES])
        self.bone_names = bone_names
        self.bone_parents = bone_parents
        self.register_buffer("shape_directions", shape_directions.float(), persistent=False)
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("skin_weights", layer.lbs_weights.float(), persistent=False)
        self.register_buffer("part_labels", torch.tensor(bone_part)[layer.lbs_weights.argmax(1)], persistent=False)
        self.register_buffer("landmark_vertex", landmarks, persistent=False)
        self.register_buffer("bone_joint", torch.tensor(bone_joint), persistent=False)
        self.register_buffer("joint_source", torch.tensor(joint_source), persistent=False)
        # A named joint is valid where the bone it sits on is the one its own rotation drives.
        valid = torch.ones(NUM_JOINTS, dtype=torch.bool)
        valid[: len(joint_source)] = torch.tensor([bone_joint[b] == j for j, b in enumerate(joint_source)])
        self.register_buffer("joint_valid", valid, persistent=False)

    def _shaped(self, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The shaped template [T, V, 3] of completed params (no pose correctives)."""
        from smplx.lbs import blend_shapes

        coefficients = torch.cat([p[k] for k in self.shape_dims], dim=1)
        return self.layer.v_template + blend_shapes(coefficients, self.shape_directions)

    def _rotations(self, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Rotation of each of the model's bones [T, J, 3, 3] from completed params."""
        full = full_pose_matrices(p)  # [T, 55, 3, 3]
        eye = torch.eye(3, dtype=full.dtype, device=full.device)
        driven = (self.bone_joint >= 0)[None, :, None, None]
        return torch.where(driven, full[:, self.bone_joint.clamp_min(0)], eye)

    def forward(self, params: Mapping[str, torch.Tensor]) -> BodyOutput:
        """Pose the body.

        Args:
            params: pose fields and shape fields (``param_dims``), each [T, D].
        Returns:
            BodyOutput with vertices [T, V, 3], joints [T, NUM_JOINTS, 3] and bone_transforms
            [T, J, 4, 4] (T-pose canonical -> posed, translation included).
        """
        from smplx.lbs import batch_rigid_transform, vertices2joints

        p = self.complete_params(params)
        rotations = self._rotations(p)  # [T, J, 3, 3]
        T = rotations.shape[0]
        shaped = self._shaped(p).expand(T, -1, -1)  # [T, V, 3]
        rest_joints = vertices2joints(self.layer.J_regressor, shaped)  # [T, J, 3]
        eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        pose_feature = (rotations[:, 1:] - eye).reshape(T, -1)  # [T, (J-1)*9]
        correctives = (pose_feature @ self.layer.posedirs).reshape(T, -1, 3)  # [T, V, 3]
        posed_joints, A = batch_rigid_transform(rotations, rest_joints, self.layer.parents, dtype=rotations.dtype)
        transl = p["transl"]
        bone_transforms = rigid(eye.expand(T, 3, 3), transl)[:, None] @ A  # [T, J, 4, 4]
        vertices = pose_points(shaped + correctives, self.skin_weights, bone_transforms)
        joints = torch.cat([posed_joints[:, self.joint_source] + transl[:, None], vertices[:, self.landmark_vertex]], dim=1)
        return BodyOutput(vertices=vertices, joints=joints, bone_transforms=bone_transforms)

    def rest_vertices(self, params: Mapping[str, torch.Tensor], *, canonical: str = "t") -> torch.Tensor:
        """Canonical vertices [T, V, 3] (see ``BodyModel.rest_vertices``); the T-pose is the shaped
        template itself."""
        if canonical != "t":
            return super().rest_vertices(params, canonical=canonical)
        p = self.complete_params(params)
        return self._shaped(p).expand(p["transl"].shape[0], -1, -1)


def quiet() -> contextlib.AbstractContextManager:
    """Swallows what smplx prints to stdout (warnings about small shape spaces) while it loads."""
    return contextlib.redirect_stdout(io.StringIO())


# -- reading model files -------------------------------------------------------------------------


class _Stored:
    """Stands in for an object of a model pickle (chumpy arrays, scipy sparse matrices): keeps the
    data it was saved with and runs none of its code."""

    def __init__(self, *args) -> None:
        self.args = args
        self.state = None

    def __setstate__(self, state) -> None:
        self.state = state


class _ChumpyArray(_Stored):
    pass


class _SparseMatrix(_Stored):
    column_major = True


class _SparseRowMatrix(_SparseMatrix):
    column_major = False


# What a model pickle may name: numpy's array reconstruction, plain containers, and the codec
# protocol-2 pickles written by Python 3 use for bytes. Nothing here runs code from the file.
_ALLOWED_GLOBALS = {
    (module, name): getattr(np.core.multiarray, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
}
_ALLOWED_GLOBALS.update({("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode})
_ALLOWED_GLOBALS.update({(m, "_reconstructor"): copyreg._reconstructor for m in ("copy_reg", "copyreg")})
_ALLOWED_GLOBALS.update(
    {(m, t.__name__): t for m in ("__builtin__", "builtins") for t in (object, set, frozenset)}
)


class _ModelUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, chumpy arrays and scipy sparse matrices, as data only; refuses the rest."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[module, name]
        if module.split(".")[0] == "chumpy" and name == "Ch":
            return _ChumpyArray
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
            return _SparseMatrix if name == "csc_matrix" else _SparseRowMatrix
        raise pickle.UnpicklingError(f"it would load {module}.{name}, which a model file has no need for")


def _as_array(value, key: str) -> np.ndarray | str | bytes | int | float | None:
    """A model-file entry as plain data: arrays stay arrays, stand-ins become arrays."""
    if isinstance(value, _ChumpyArray):
        state = value.state if isinstance(value.state, dict) else {}
        if "x" not in state:
            raise StudioError(f"'{key}' is a chumpy expression, not an array; save the model with plain arrays")
        value = state["x"]
    elif isinstance(value, _SparseMatrix):
        state = value.state if isinstance(value.state, dict) else {}
        try:
            rows, cols = (int(n) for n in state.get("_shape", state.get("shape")))
            data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        except (KeyError, TypeError, ValueError):
            raise StudioError(f"'{key}' is a sparse matrix studio cannot read") from None
        if rows * cols > _MAX_ARRAY_ELEMENTS or len(indptr) != (cols if value.column_major else rows) + 1:
            raise StudioError(f"'{key}' is a sparse matrix of impossible size {rows}x{cols}")
        dense = np.zeros((rows, cols), dtype=np.float64)
        outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        if value.column_major:
            dense[indices, outer] = data
        else:
            dense[outer, indices] = data
        return dense
    if isinstance(value, (str, bytes, int, float)) or (isinstance(value, np.ndarray) and value.dtype != object):
        return value
    return None  # other entries (training notes, priors as lists) are not needed


def read_model_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a SMPL-family model file (.npz, or a .pkl as the official files are), read as data:
    pickles may hold numpy arrays, chumpy arrays and scipy sparse matrices (no chumpy or code runs).

    Raises:
        StudioError: one line, for a file that is not such a model file.
    """
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        else:
            with open(path, "rb") as f:
                data = _ModelUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, ValueError, EOFError, OSError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise StudioError(f"{path}: not a usable body model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise StudioError(f"{path}: not a usable body model file (it holds a {type(data).__name__}, not named arrays)")
    try:
        arrays = {str(k): _as_array(v, str(k)) for k, v in data.items()}
    except StudioError as exc:
        raise StudioError(f"{path}: {exc}") from None
    return {k: v for k, v in arrays.items() if v is not None}
