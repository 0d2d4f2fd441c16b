"""3D Gaussian splats as INRIA-layout .ply files, with studio's body binding riding along.

The file is a binary little-endian PLY with one element ``vertex`` whose float properties are, in
order: ``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_*`` (channel-major: all red coefficients, then
green, then blue; none for SH degree 0) ``opacity`` (a logit) ``scale_0..2`` (logs) ``rot_0..3``
(a quaternion, w first). Any 3DGS viewer opens it (SuperSplat, gsplat's viewer, Gradio's Model3D).

studio adds what it needs to animate the splat, which viewers ignore:
- four more float properties per Gaussian: ``face_id`` (the body triangle it is bound to, a whole
  number) and ``bary_0 bary_1 bary_2`` (the barycentric point of that triangle it hangs from);
- one header comment ``comment studio_avatar {JSON}`` with ``format`` ("studio.gaussian_avatar"),
  ``version``, ``body_model``, ``shape`` (the body's shape fields), ``canonical`` (the canonical pose
  the Gaussians are in: "big" or "t") and ``max_offset`` (metres; how far a Gaussian may sit from its
  anchor).
The Gaussians themselves are in that canonical pose, the body's rest shape, in metres, stored in the
axes 3DGS scenes use (OpenCV/COLMAP: x right, y down, z forward, i.e. studio's Y-up world turned 180
degrees about X; ``"axes": "opencv"`` in the header), so splat viewers show the avatar upright and
facing them. Posed frames (``save_splat``) use the same axes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from studio.errors import StudioError
from studio.outputs import atomic_path

from .avatar import BodyBinding, GaussianAvatar

FORMAT = "studio.gaussian_avatar"
VERSION = 1
BINDING_PROPERTIES = ("face_id", "bary_0", "bary_1", "bary_2")
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4", "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip
MAX_HEADER_BYTES = 1 << 16
AXES = "opencv"
MAX_GAUSSIANS = 20_000_000


def splat_property_names(sh_degree: int) -> list[str]:
    """The INRIA 3DGS property names in file order for an SH degree."""
    rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


# Signs of the real spherical-harmonic basis functions (3DGS order, degrees 1-3) under a turn of 180
# degrees about X, (x, y, z) -> (x, -y, -z): a function changes sign with its count of y and z factors.
_SH_SIGNS = torch.tensor([-1.0, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1])


def to_file_axes(means: torch.Tensor, quats: torch.Tensor, sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """studio's world (Y up) -> the file's OpenCV axes, 180 degrees about X: means [N, 3], quats [N, 4]
    (w first) and SH coefficients [N, K, 3]."""
    w, x, y, z = quats.unbind(-1)
    signs = torch.cat([torch.ones(1), _SH_SIGNS])[: sh.shape[1]]
    return means * torch.tensor([1.0, -1.0, -1.0]), torch.stack([-x, w, -z, y], -1), sh * signs[:, None]


def from_file_axes(means: torch.Tensor, quats: torch.Tensor, sh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of ``to_file_axes``."""
    p0, p1, p2, p3 = quats.unbind(-1)
    signs = torch.cat([torch.ones(1), _SH_SIGNS])[: sh.shape[1]]
    return means * torch.tensor([1.0, -1.0, -1.0]), torch.stack([p1, -p0, p3, -p2], -1), sh * signs[:, None]


def splat_columns(means, sh, opacity_logits, log_scales, quats) -> dict[str, np.ndarray]:
    """The splat properties of N Gaussians (world axes) as named float32 columns in the file's axes
    (see the module docstring)."""
    means, quats, sh = to_file_axes(torch.as_tensor(means).detach(), torch.as_tensor(quats).detach(), torch.as_tensor(sh).detach())
    N, K, _ = sh.shape
    t = lambda x: np.asarray(x.detach().cpu().numpy() if torch.is_tensor(x) else x, np.float32)  # noqa: E731
    means, sh = t(means), t(sh)
    cols = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2]}
    cols.update({n: np.zeros(N, np.float32) for n in ("nx", "ny", "nz")})
    cols.update({f"f_dc_{c}": sh[:, 0, c] for c in range(3)})
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(N, -1)  # channel-major
    cols.update({f"f_rest_{i}": rest[:, i] for i in range(rest.shape[1])})
    cols["opacity"] = t(opacity_logits).reshape(N)
    cols.update({f"scale_{i}": t(log_scales)[:, i] for i in range(3)})
    cols.update({f"rot_{i}": t(quats)[:, i] for i in range(4)})
    return cols


def write_ply(path: str | Path, columns: dict[str, np.ndarray], *, comments: tuple[str, ...] = ()) -> Path:
    """Write float32 columns (all [N]) as a binary little-endian PLY, atomically."""
    path = Path(path)
    names = list(columns)
    N = len(next(iter(columns.values()))) if columns else 0
    table = np.empty(N, dtype=[(n, "<f4") for n in names])
    for n in names:
        table[n] = columns[n]
    header = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments), f"element vertex {N}"]
    header += [f"property float {n}" for n in names] + ["end_header"]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(table.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """A binary little-endian PLY's vertex properties as float32 columns, and its header comments.

    Raises:
        StudioError: one line saying what the file is not (a PLY, binary little-endian, complete).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES)
            size = path.stat().st_size
    except OSError as exc:
        raise StudioError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head.startswith(b"ply"):
        raise StudioError(f"{path}: not a PLY file")
    end = head.find(b"end_header")
    if end < 0:
        raise StudioError(f"{path}: not a complete PLY file (no end_header within {MAX_HEADER_BYTES} bytes)")
    body_start = head.index(b"\n", end) + 1 if b"\n" in head[end:] else len(head)
    try:
        lines = head[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise StudioError(f"{path}: not a PLY file (its header is not text)") from None
    fmt, comments, elements = None, [], []
    for line in lines[1:]:
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else None
        elif words[0] == "comment":
            comments.append(line[len("comment ") :])
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if len(words) == 3 and words[1] in _PLY_TYPES:
                elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
            elif len(elements) == 1:  # only the vertices are read: lists elsewhere (a mesh's faces) do not matter
                raise StudioError(f"{path}: not a 3D Gaussian splat (its vertices have a property studio cannot read: '{line.strip()}')")
    if fmt != "binary_little_endian":
        raise StudioError(f"{path}: a {fmt or 'malformed'} PLY; 3D Gaussian splats are binary_little_endian PLY files")
    if not elements or elements[0][0] != "vertex":
        raise StudioError(f"{path}: not a 3D Gaussian splat (its first element is not 'vertex')")
    _, count, props = elements[0]
    if count > MAX_GAUSSIANS:
        raise StudioError(f"{path}: {count} Gaussians is more than studio reads ({MAX_GAUSSIANS})")
    dtype = np.dtype(props)
    if body_start + count * dtype.itemsize > size:
        raise StudioError(f"{path}: the file is cut short ({size} bytes; its header promises {body_start + count * dtype.itemsize})")
    data = np.fromfile(path, dtype=dtype, count=count, offset=body_start)
    return {name: data[name].astype(np.float32) for name, _ in props}, comments


# --- avatars ---------------------------------------------------------------------------------------


def save_avatar(path: str | Path, avatar: GaussianAvatar) -> Path:
    """Write an avatar as an INRIA 3DGS .ply with its body binding (see the module docstring)."""
    cols = splat_columns(avatar.means, avatar.sh, avatar.opacity_logits, avatar.log_scales, avatar.quats)
    cols["face_id"] = avatar.face_ids.numpy().astype(np.float32)
    bary = avatar.barycentric.detach().numpy()
    cols.update({f"bary_{i}": bary[:, i] for i in range(3)})
    b = avatar.binding
    meta = {
        "format": FORMAT, "version": VERSION, "axes": AXES, "body_model": b.body_model, "canonical": b.canonical, "max_offset": b.max_offset,
        "shape": {k: v.reshape(-1).tolist() for k, v in b.shape.items()},
    }  # fmt: skip
    return write_ply(path, cols, comments=(f"studio_avatar {json.dumps(meta, separators=(',', ':'))}",))


def load_avatar(path: str | Path) -> GaussianAvatar:
    """Read a .ply written by ``save_avatar``.

    Raises:
        StudioError: one line saying what the file is not: a PLY, a 3D Gaussian splat, or a studio
        avatar (a splat without the body binding cannot be animated).
    """
    path = Path(path)
    cols, comments = read_ply(path)
    missing = [n for n in splat_property_names(0) if n not in cols and n not in ("nx", "ny", "nz")]
    if missing:
        raise StudioError(f"{path}: not a 3D Gaussian splat (no {', '.join(missing[:4])}{'...' if len(missing) > 4 else ''}); a mesh or point cloud?")
    meta = next((c[len("studio_avatar ") :] for c in comments if c.startswith("studio_avatar ")), None)
    if meta is None or any(n not in cols for n in BINDING_PROPERTIES):
        raise StudioError(f"{path}: a 3D Gaussian splat but not a studio avatar: it has no body binding to animate it with (make one with `studio avatar`)")
    try:
        meta = json.loads(meta)
        if meta.get("format") != FORMAT:
            raise ValueError("format")
        shape = {str(k): torch.tensor(np.asarray(v, np.float32)).reshape(1, -1) for k, v in dict(meta["shape"]).items()}
        binding = BodyBinding(body_model=str(meta["body_model"]), shape=shape, canonical=str(meta["canonical"]), max_offset=float(meta["max_offset"]))
    except (ValueError, KeyError, TypeError):
        raise StudioError(f"{path}: its studio_avatar header is damaged") from None
    if int(meta.get("version", 0)) > VERSION:
        raise StudioError(f"{path}: a studio avatar of a newer format (version {meta['version']}); update studio")
    rest = sorted((n for n in cols if n.startswith("f_rest_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    K = (len(rest) + 3) // 3
    if 3 * (K - 1) != len(rest) or round(math.sqrt(K)) ** 2 != K:
        raise StudioError(f"{path}: {len(rest)} f_rest properties is no spherical-harmonic degree")
    N = len(cols["x"])
    sh = np.zeros((N, K, 3), np.float32)
    sh[:, 0] = np.stack([cols[f"f_dc_{c}"] for c in range(3)], -1)
    if rest:
        sh[:, 1:] = np.stack([cols[n] for n in rest], -1).reshape(N, 3, K - 1).transpose(0, 2, 1)
    face = cols["face_id"]
    bary = np.stack([cols[f"bary_{i}"] for i in range(3)], -1)
    values = np.concatenate([np.stack([cols[n] for n in splat_property_names(0) if n in cols], -1).reshape(-1), bary.reshape(-1), sh.reshape(-1)])
    if not np.isfinite(values).all():
        raise StudioError(f"{path}: holds values that are not finite numbers")
    if N and ((face < 0).any() or (face != np.round(face)).any() or np.abs(bary.sum(1) - 1).max() > 1e-3 or bary.min() < -1e-3):
        raise StudioError(f"{path}: its body binding is damaged (face ids must be whole numbers, barycentric weights sum to 1)")
    t = lambda *names: torch.from_numpy(np.stack([cols[n] for n in names], -1))  # noqa: E731
    means, quats, sh = t("x", "y", "z"), t("rot_0", "rot_1", "rot_2", "rot_3"), torch.from_numpy(sh)
    if meta.get("axes") == AXES:
        means, quats, sh = from_file_axes(means, quats, sh)
    return GaussianAvatar(
        means=means,
        quats=quats,
        log_scales=t("scale_0", "scale_1", "scale_2"),
        opacity_logits=torch.from_numpy(cols["opacity"].copy()),
        sh=sh,
        face_ids=torch.from_numpy(face.astype(np.int64)),
        barycentric=torch.from_numpy(bary.astype(np.float32)),
        binding=binding,
    )


def save_splat(path: str | Path, means: torch.Tensor, covars: torch.Tensor, avatar: GaussianAvatar) -> Path:
    """Write posed Gaussians (means [N, 3], covariances [N, 3, 3], the avatar's colours and
    opacities) as a plain INRIA 3DGS .ply (no binding: a posed frame is not re-animated)."""
    from .avatar import decompose_covariance

    quats, scales = decompose_covariance(covars.detach())
    return write_ply(path, splat_columns(means, avatar.sh, avatar.opacity_logits, scales.log(), quats))


__all__ = ["BINDING_PROPERTIES", "FORMAT", "load_avatar", "read_ply", "save_avatar", "save_splat", "splat_columns", "splat_property_names", "write_ply"]
