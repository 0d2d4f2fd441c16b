"""Building blocks shared by studio's generalizable human NeRFs (SHERF, TransHuman; ``pipelines/sherf``,
``pipelines/transhuman``), which never import each other.

- **Safe loading** of the official containers: ``load_pickle`` (a restricted unpickler: tensors and
  plain containers are rebuilt, every other class becomes an inert ``StandIn`` that only keeps what it
  was given, globals that can run code are refused, storages land on the CPU), ``read_torch_zip``
  (``torch.save`` archives through the same unpickler), ``module_state`` (the state dict of a pickled
  module tree, non-persistent buffers left out, as ``state_dict()`` does) and ``load_strict`` (with
  ``studio.checkpoints.check_state``: one line naming a missing, unexpected or wrongly shaped tensor).
- **Networks both use**: ``PositionalEncoding`` (pixelNeRF's layout), ``ResNet18`` (torchvision's key
  names), ``use_batch_statistics`` and sparse 3D convolution (``SparseVolume``, ``SparseConv3d``,
  ``SparseConvNet``): a torch implementation, and spconv's CPU/GPU kernels when spconv is installed
  (``spconv_available()``), computing the same function.
- **Rays and samples**: ``pixel_rays`` (the official convention: one ray per pixel, directions whose
  camera-space depth is 1), ``ray_box``, ``sample_depths``, ``VertexGrid`` (exact nearest-vertex and
  within-radius queries in torch, no pytorch3d) and ``knn``.
- **Volume rendering** on nerfacc: ``composite`` (its batched functions, which run on a CPU; its packed
  CUDA path on a GPU) and ``composite_reference`` (the brute-force quadrature it is tested against).
- **Body warps** by nearest-vertex skinning: ``PosedBody``, ``unpose``, ``pose`` and ``blend`` (points
  between a posed body, its rest pose and the canonical "big" pose, with pose correctives and shape
  offsets, as SHERF and TransHuman move their sample points).
- **References**: ``reference_view`` (a square crop of the photo around the person, background black,
  its camera in the official pixel convention) and ``convert_condition`` (a fitted body carried to
  another body model: the pose fields as they are, the shape fitted to the rest joints, the pelvis kept).
- **Metrics** (``psnr``, ``ssim``) and **training data**: ``generate_multiview_data`` renders studio's
  photo-textured mesh avatars (``studio.texture``) posed by mocap from rings of cameras into SHERF's
  (RenderPeople) or TransHuman's (ZJU-MoCap) folder layout, ``MultiViewDataset`` reads them back, and
  ``train_nerf`` is the accelerate training loop both ``train.py`` scripts run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import math
import pickle
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studio.camera import Camera
from studio.checkpoints import check_state
from studio.errors import StudioError

logger = logging.getLogger(__name__)

# ==================================================================================================
# Safe loading
# ==================================================================================================

# Modules whose globals can run code or reach the system: a pickle naming one is refused outright.
_REFUSED_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pickle", "_pickle", "marshal",
    "types", "ctypes", "socket", "code", "codeop", "pty", "webbrowser", "platform", "signal", "multiprocessing",
    "threading", "asyncio", "io", "tempfile", "glob", "pathlib", "urllib", "http", "ftplib", "smtplib", "zipimport",
    "pdb", "timeit", "operator", "inspect", "ast", "dill", "cloudpickle", "joblib", "torch.hub", "torch.jit",
    "torch.package", "torch.serialization", "numpy.lib.npyio", "numpy.load", "numpy.testing", "setuptools", "pip",
)  # fmt: skip


def _sized_from_data(kind: type) -> Callable[..., Any]:
    """``bytes``/``bytearray`` as a pickle may call them (from data it holds), refusing a size given
    as a number: ``bytes(10**12)`` in a file would allocate whatever the file says."""

    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise pickle.UnpicklingError(f"it asks for a {kind.__name__} of {args[0]} bytes")
        return kind(*args)

    build.__name__ = kind.__name__
    return build


# Builtins a data pickle may name (``range`` is left out: ``list(range(10**12))`` would be a memory bomb).
_SAFE_BUILTINS = {
    **{b.__name__: b for b in (set, frozenset, slice, complex, object, tuple, list, dict, int, float, bool, str)},
    "bytes": _sized_from_data(bytes), "bytearray": _sized_from_data(bytearray),
}  # fmt: skip
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16, "CharStorage": torch.int8,
    "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that can run code."""


class StandIn:
    """An inert object in place of a class or function the restricted unpickler does not rebuild.

    It runs nothing: constructing, calling or restoring it only records what it was given (``args``,
    ``state``, ``items`` for list- and dict-like objects), so tensors inside can be collected. The
    class's dotted name is ``qualname``.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:  # NEWOBJ builds without __init__
        obj = super().__new__(cls)
        obj.args, obj.kwargs = args, kwargs
        obj.state, obj.items, obj.keyed = None, [], {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.keyed[key] = value

    def __call__(self, *args: Any, **kwargs: Any) -> StandIn:  # a stand-in function called by REDUCE
        return _stand_in_class(f"{self.qualname}()")(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


_STAND_IN_CLASSES: dict[str, type] = {}


def _stand_in_class(qualname: str) -> type:
    if qualname not in _STAND_IN_CLASSES:
        _STAND_IN_CLASSES[qualname] = type("StandIn_" + qualname.replace(".", "_"), (StandIn,), {"qualname": qualname})
    return _STAND_IN_CLASSES[qualname]


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """What the unpickler returns for ``torch.FloatStorage`` and friends: only the dtype."""

    dtype: torch.dtype


def _storage_from_bytes(data: bytes) -> Any:
    """A storage pickled inside a plain pickle (``torch.storage._load_from_bytes``): its bytes are a
    legacy ``torch.save`` archive, read with ``weights_only=True`` and mapped to the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` for storages made by this module (typed, on the CPU)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("a tensor without a readable storage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = torch.empty((0,), dtype=storage.dtype)
        t.set_(storage._untyped_storage, int(offset), tuple(size), tuple(stride))
    return t


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """``torch._utils._rebuild_parameter``: the tensor itself (no autograd state is kept)."""
    return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


def _refused(module: str, name: str) -> bool:
    if module == "builtins" or module == "__builtin__":
        return name not in _SAFE_BUILTINS
    return any(module == m or module.startswith(m + ".") for m in _REFUSED_MODULES)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles data only: the tensor and container globals in ``_SAFE_GLOBALS``, safe builtins and,
    with ``numpy=True``, numpy arrays are rebuilt; every other class or function becomes a
    ``StandIn``; globals of modules that can run code (``os``, ``subprocess``, ``builtins.eval``, ...)
    raise ``pickle.UnpicklingError`` naming them. Storages of ``torch.save`` archives come from
    ``storages`` (a callable given the persistent id's key and dtype)."""

    def __init__(self, file: Any, *, numpy: bool = False, storages: Callable[[str, torch.dtype], Any] | None = None) -> None:
        super().__init__(file, encoding="latin1")
        self._numpy = numpy
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if _refused(module, name):
            raise RefusedGlobal(f"it references {module}.{name}, which studio never calls from a file (it can run code or exhaust memory)")
        if self._numpy and module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(np.core.multiarray, name)
        if self._numpy and module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if self._numpy and module in ("numpy.dtypes",) and name.endswith("DType"):
            return getattr(np.dtypes, name)
        return _stand_in_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None or not isinstance(pid, tuple) or len(pid) < 3 or pid[0] != "storage":
            raise pickle.UnpicklingError("unexpected persistent id")
        kind = pid[1]
        dtype = kind.dtype if isinstance(kind, _StorageType) else torch.uint8
        return self._storages(str(pid[2]), dtype)


# What reading a damaged or hostile file can raise (RecursionError is a RuntimeError).
_UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError, OSError, MemoryError, OverflowError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_pickle(path: str | Path, *, numpy: bool = False, source: str = "") -> Any:
    """A plain pickle read with ``RestrictedUnpickler`` (never ``pickle.load``).

    Args:
        numpy: also rebuild numpy arrays (data files such as TransHuman's k-means clusters).
        source: where the file comes from, for the error line.
    Raises:
        StudioError: one line naming the file: missing, refused (a global that can run code), or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: missing" + (f" (from {source})" if source else ""))
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, numpy=numpy).load()
    except RefusedGlobal as exc:
        raise StudioError(f"{path}: refused: {_first_line(exc)}") from None
    except _UNREADABLE as exc:
        raise StudioError(f"{path}: not a readable pickle ({type(exc).__name__}: {_first_line(exc)})") from None


_MAX_EXPANSION = 64  # a compressed storage entry may expand this many times (weights compress barely; a zip bomb ~1000x)


def read_torch_zip(path: str | Path, *, source: str = "") -> Any:
    """A ``torch.save`` archive (zip format) read with ``RestrictedUnpickler``: tensors are rebuilt
    from the archive's storages on the CPU; any other object becomes a ``StandIn``.

    Raises:
        StudioError: one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: missing" + (f" (from {source})" if source else ""))
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl:
                raise StudioError(f"{path}: not a torch.save archive (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() not in (b"little", b""):
                raise StudioError(f"{path}: a big-endian archive, which studio does not read")

            def storage(key: str, dtype: torch.dtype) -> Any:
                info = archive.getinfo(f"{prefix}data/{key}")
                if info.compress_type != zipfile.ZIP_STORED and info.file_size > _MAX_EXPANSION * max(info.compress_size, 1):
                    raise StudioError(f"{path}: entry {info.filename} would expand {info.file_size} bytes from {info.compress_size} (torch.save stores them uncompressed)")
                data = archive.read(info)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
                    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)

            with archive.open(pkl[0]) as f:
                return RestrictedUnpickler(io.BufferedReader(f), storages=storage).load()
    except zipfile.BadZipFile:
        raise StudioError(f"{path}: not a torch.save zip archive (legacy-format files: re-save them with a recent torch)") from None
    except RefusedGlobal as exc:
        raise StudioError(f"{path}: refused: {_first_line(exc)}") from None
    except StudioError:
        raise
    except _UNREADABLE as exc:
        raise StudioError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def _module_dict(obj: Any) -> dict | None:
    """The ``__dict__`` a pickled ``nn.Module`` carried: the state of a stand-in, or the ``state`` of
    an EG3D "persistent" object (rebuilt from ``meta``, whose embedded source text is never run)."""
    if isinstance(obj, StandIn):
        if isinstance(obj.state, dict) and "_modules" in obj.state:
            return obj.state
        if obj.args and isinstance(obj.args[0], dict) and isinstance(obj.args[0].get("state"), dict):
            return _module_dict_from_state(obj.args[0]["state"])
        if isinstance(obj.state, tuple) and obj.state and isinstance(obj.state[0], dict) and "_modules" in obj.state[0]:
            return obj.state[0]
    if isinstance(obj, dict) and "_modules" in obj:
        return obj
    return None


def _module_dict_from_state(state: dict) -> dict | None:
    return state if "_modules" in state else None


def module_state(obj: Any, *, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict of a pickled module tree (stand-ins): parameters and persistent buffers under
    their dotted names, as ``nn.Module.state_dict()`` would give them.

    Raises:
        StudioError: ``obj`` is not a pickled module.
    """
    d = _module_dict(obj)
    if d is None:
        raise StudioError(f"'{prefix.rstrip('.') or 'the object'}' is not a pickled torch module")
    out: dict[str, torch.Tensor] = {}
    for name, value in (d.get("_parameters") or {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
    skip = d.get("_non_persistent_buffers_set") or set()
    for name, value in (d.get("_buffers") or {}).items():
        if isinstance(value, torch.Tensor) and name not in skip:
            out[prefix + name] = value
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state(child, prefix=f"{prefix}{name}."))
    return out


def spconv_weight_layout(expected: Mapping[str, torch.Size | Sequence[int]], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with sparse-convolution weights saved by spconv < 2.2 (``[3, 3, 3, in, out]``) turned
    into the ``[out, 3, 3, 3, in]`` layout of spconv >= 2.2 that studio's modules use (the only
    change studio makes to an official file's tensors); every other tensor as it is."""
    out = dict(state)
    for key, shape in expected.items():
        value = state.get(key)
        if value is None or len(shape) != 5 or tuple(value.shape) == tuple(shape):
            continue
        o, k1, k2, k3, i = shape
        if (k1, k2, k3) == (3, 3, 3) and tuple(value.shape) == (3, 3, 3, i, o):
            out[key] = value.permute(4, 0, 1, 2, 3).contiguous()
    return out


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``module`` strictly (every key, every shape, nothing extra), finite values
    only; one StudioError line naming the tensor otherwise. Meta-device modules get the tensors
    assigned. Sparse-conv weights of either spconv layout are accepted (``spconv_weight_layout``)."""
    expected = {k: v.shape for k, v in module.state_dict().items()}
    state = spconv_weight_layout(expected, state)
    check_state(expected, state, source)
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise StudioError(f"{source}: tensor '{key}' holds NaN or infinite values")
    reference = module.state_dict()
    fixed = {k: v.to(reference[k].dtype) if v.dtype != reference[k].dtype else v for k, v in state.items()}
    module.load_state_dict(fixed, strict=True, assign=True)


def save_safetensors(path: Path, state: Mapping[str, torch.Tensor], *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict as .safetensors, atomically."""
    from safetensors.torch import save_file

    from studio.outputs import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=dict(metadata or {}))
    return path


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors file; one StudioError line when unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # noqa: BLE001 - any failure of a user's file is one line
        raise StudioError(f"{path}: not a readable .safetensors file ({_first_line(exc)})") from None


# ==================================================================================================
# Networks both pipelines use
# ==================================================================================================


class PositionalEncoding(nn.Module):
    """Sin/cos encoding in pixelNeRF's layout, which both official codes use: ``x`` [N, D] ->
    [N, D + 2 F D] (``x`` first when ``include_input``), then for each frequency ``f``: sin(f x), cos(f x).

    The frequencies are ``freq_factor * 2**k`` for k = 0..F-1 (SHERF: factor 1; TransHuman: pi). They
    and the phases are buffers ``_freqs`` / ``_phases`` [1, 2F, 1], persistent (in the state dict, as
    in the official ones) unless ``persistent=False`` (NeRF's view-direction embedder, a plain function there).
    """

    def __init__(self, num_freqs: int, *, d_in: int = 3, freq_factor: float = 1.0, include_input: bool = True, persistent: bool = True) -> None:
        super().__init__()
        self.num_freqs, self.d_in, self.include_input = num_freqs, d_in, include_input
        freqs = freq_factor * 2.0 ** torch.arange(num_freqs, dtype=torch.float32)
        self.register_buffer("_freqs", torch.repeat_interleave(freqs, 2).view(1, -1, 1), persistent=persistent)
        phases = torch.zeros(2 * num_freqs)
        phases[1::2] = math.pi * 0.5
        self.register_buffer("_phases", phases.view(1, -1, 1), persistent=persistent)
        self.d_out = 2 * num_freqs * d_in + (d_in if include_input else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed = torch.sin(torch.addcmul(self._phases, x[:, None, :], self._freqs)).reshape(x.shape[0], -1)
        return torch.cat([x, embed], dim=-1) if self.include_input else embed


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block (torchvision's key names)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18 with torchvision's module names (``conv1``, ``bn1``, ``layer1..4``, ``fc``), widths
    ``width * (1, 2, 4, 8)``; at ``width=64`` its state dict is torchvision's ``resnet18()``.
    ``classes=0`` leaves out ``fc`` (TransHuman replaces it by an empty module)."""

    def __init__(self, *, width: int = 64, classes: int = 1000) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))
        self.fc = nn.Linear(8 * w, classes) if classes else None

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1, bn1, ReLU: [B, 3, H, W] -> [B, w, H/2, W/2]."""
        return F.relu(self.bn1(self.conv1(x)))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The 3x3 stride-2 max pool after the stem."""
        return F.max_pool2d(x, 3, 2, 1)

    def global_feature(self, x: torch.Tensor) -> torch.Tensor:
        """The average-pooled layer4 output (``fc`` not applied): [B, 3, H, W] -> [B, 8w]."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.pool(self.stem(x))))))
        return x.mean(dim=(2, 3))


@contextlib.contextmanager
def use_batch_statistics(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside, every BatchNorm of ``module`` normalises with the statistics of the batch it sees (as
    in train mode) without updating its running statistics; ``enabled=False`` changes nothing."""
    if not enabled:
        yield
        return
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.running_mean, m.running_var))
            m.running_mean = None
            m.running_var = None
    try:
        yield
    finally:
        for m, mean, var in saved:
            m.running_mean, m.running_var = mean, var


# --- sparse 3D convolution -------------------------------------------------------------------------

def spconv_available() -> bool:
    """Whether spconv (CPU build from PyPI, or a CUDA build) imports here; imported on first use."""
    return _spconv_module() is not None


@functools.cache
def _spconv_module() -> Any:
    try:
        import spconv.pytorch as module
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return module


_OFFSETS = torch.tensor([[dz, dy, dx] for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # kernel order (z, y, x)


@dataclasses.dataclass
class SparseVolume:
    """Features on the active voxels of a 3D grid (one batch element).

    ``coords`` are voxel indices (z, y, x) in a grid of ``shape`` (D, H, W); ``rules`` caches the
    neighbour tables of convolution layers sharing an ``indice_key`` (spconv's name), so layers of
    one stage look their neighbours up once.
    """

    features: torch.Tensor  # [N, C]
    coords: torch.Tensor  # [N, 3] long, (z, y, x)
    shape: tuple[int, int, int]  # (D, H, W)
    rules: dict = dataclasses.field(default_factory=dict)

    def replace(self, features: torch.Tensor) -> SparseVolume:
        return dataclasses.replace(self, features=features)

    def dense(self) -> torch.Tensor:
        """[C, D, H, W]: zeros where no voxel is active."""
        out = self.features.new_zeros(self.features.shape[1], *self.shape)
        c = self.coords
        out[:, c[:, 0], c[:, 1], c[:, 2]] = self.features.T
        return out


def _linear(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return (coords[:, 0] * shape[1] + coords[:, 1]) * shape[2] + coords[:, 2]


_DENSE_TABLE_LIMIT = 1 << 26  # voxels up to which a volume's row lookup is a dense array


def _lookup(coords: torch.Tensor, table: tuple[str, torch.Tensor, torch.Tensor | None], shape: Sequence[int]) -> torch.Tensor:
    """Row index of each voxel (z, y, x) [M, 3] in a volume (``_table``); -1 where not active or
    outside the grid."""
    inside = ((coords >= 0) & (coords < torch.tensor(shape, device=coords.device))).all(1)
    lin = _linear(coords.clamp_min(0), shape).clamp_max(int(np.prod(shape)) - 1)
    kind, a, b = table
    if kind == "dense":
        rows = a[lin].long()
        return torch.where(inside, rows, torch.full_like(rows, -1))
    keys, order = a, b
    pos = torch.searchsorted(keys, lin).clamp_max(max(len(keys) - 1, 0))
    found = inside & (keys[pos] == lin) if len(keys) else torch.zeros_like(inside)
    return torch.where(found, order[pos], torch.full_like(pos, -1))


def _table(volume: SparseVolume) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """The row lookup of a volume (cached): a dense array of rows for grids up to
    ``_DENSE_TABLE_LIMIT`` voxels, else its sorted linear indices and their rows."""
    if "_table" not in volume.rules:
        lin = _linear(volume.coords, volume.shape)
        size = int(np.prod(volume.shape))
        if size <= _DENSE_TABLE_LIMIT:
            dense = torch.full((size,), -1, dtype=torch.int32, device=lin.device)
            dense[lin] = torch.arange(len(lin), dtype=torch.int32, device=lin.device)
            volume.rules["_table"] = ("dense", dense, None)
        else:
            keys, order = torch.sort(lin)
            volume.rules["_table"] = ("sorted", keys, order)
    return volume.rules["_table"]


def make_sparse_volume(coords: torch.Tensor, features: torch.Tensor, shape: Sequence[int]) -> SparseVolume:
    """A volume from possibly repeated voxel indices: features of voxels given more than once are
    averaged (spconv leaves repeated indices unspecified; SMPL vertices closer than a voxel repeat).

    Args:
        coords: [N, 3] long (z, y, x), inside ``shape``.
        features: [N, C].
    """
    shape = tuple(int(s) for s in shape)
    lin = _linear(coords, shape)
    unique, inverse = torch.unique(lin, return_inverse=True)
    summed = features.new_zeros(len(unique), features.shape[1]).index_add(0, inverse, features)
    counts = torch.bincount(inverse, minlength=len(unique)).to(features.dtype)
    z = unique // (shape[1] * shape[2])
    y = (unique // shape[2]) % shape[1]
    x = unique % shape[2]
    return SparseVolume(summed / counts[:, None], torch.stack([z, y, x], 1), shape)


class SparseConv3d(nn.Module):
    """A 3x3x3 sparse convolution without bias, weight [out, 3, 3, 3, in] (spconv >= 2.2's layout).

    ``stride=1`` is submanifold (spconv's ``SubMConv3d``: outputs on the input's active voxels);
    ``stride=2`` is spconv's ``SparseConv3d(k=3, s=2, p=1)`` (outputs wherever the kernel touches an
    active input). Both compute what a dense ``conv3d`` (padding 1) computes at those outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, indice_key: str = "") -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.in_channels, self.out_channels, self.stride, self.indice_key = in_channels, out_channels, stride, indice_key
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, 3, in_channels))
        nn.init.kaiming_uniform_(self.weight.view(out_channels, -1), a=math.sqrt(5))
        self._spconv: dict = {}  # spconv twin, sharing the weight (not a submodule: no extra state)

    def forward(self, x: SparseVolume | Any) -> SparseVolume | Any:
        if not isinstance(x, SparseVolume):  # a spconv tensor
            return self._twin()(x)
        return self._submanifold(x) if self.stride == 1 else self._strided(x)

    def _twin(self) -> nn.Module:
        if "layer" not in self._spconv:
            spconv = _spconv_module()
            cls = spconv.SubMConv3d if self.stride == 1 else spconv.SparseConv3d
            kwargs = {} if self.stride == 1 else {"stride": 2, "padding": 1}
            layer = cls(self.in_channels, self.out_channels, 3, bias=False, indice_key=self.indice_key or None, **kwargs)
            del layer.weight
            self._spconv["layer"] = layer
        layer = self._spconv["layer"]
        layer.weight = self.weight
        return layer.to(self.weight.device)

    def _submanifold(self, x: SparseVolume) -> SparseVolume:
        key = f"subm:{self.indice_key}" if self.indice_key else None
        rule = x.rules.get(key) if key else None
        if rule is None:
            rule = _neighbours(x, x.coords, stride=1)
            if key:
                x.rules[key] = rule
        return x.replace(_SubmanifoldConv.apply(x.features, self.weight, rule))

    def _strided(self, x: SparseVolume) -> SparseVolume:
        key = f"down:{self.indice_key}"
        if key not in x.rules:
            shape = tuple((s - 1) // 2 + 1 for s in x.shape)
            # Outputs: every o with an active input p = 2 o + off (off in {-1, 0, 1}^3) inside the grid.
            o = (x.coords[:, None, :] - _OFFSETS.to(x.coords)[None]).reshape(-1, 3)  # 2 o candidates
            o = o[(o % 2 == 0).all(1)] // 2
            o = o[((o >= 0) & (o < torch.tensor(shape, device=o.device))).all(1)]
            unique = torch.unique(_linear(o, shape))
            coords = torch.stack([unique // (shape[1] * shape[2]), (unique // shape[2]) % shape[1], unique % shape[2]], 1)
            x.rules[key] = (coords, shape, _neighbours(x, coords, stride=2), {})  # the output's own rules ride along
        coords, shape, rule, child_rules = x.rules[key]
        return SparseVolume(self._gather_matmul(x.features, rule), coords, shape, child_rules)

    def _gather_matmul(self, features: torch.Tensor, rule: torch.Tensor, *, chunk: int = 1 << 22) -> torch.Tensor:
        """out[i] = sum_k W_k features[rule[i, k]] (rule N = missing) as one matrix product per chunk."""
        padded = torch.cat([features, features.new_zeros(1, features.shape[1])])
        w = self.weight.reshape(self.out_channels, 27 * self.in_channels)
        step = max(1, chunk // (27 * self.in_channels))
        return torch.cat([padded[rule[i : i + step]].reshape(-1, 27 * self.in_channels) @ w.T for i in range(0, len(rule), step)]) if len(rule) else features.new_zeros(0, self.out_channels)


class _SubmanifoldConv(torch.autograd.Function):
    """out[i] = sum_k W_k x[rule[i, k]] with a gather-based backward: a submanifold rule is its own
    transpose with the offsets reversed, so the input gradient is the same gather with the kernel
    flipped (no scatter), and the weight gradient one matrix product."""

    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, weight: torch.Tensor, rule: torch.Tensor) -> torch.Tensor:
        out_c, in_c = weight.shape[0], weight.shape[-1]
        padded = torch.cat([features, features.new_zeros(1, in_c)])
        gathered = padded[rule].reshape(len(rule), 27 * in_c)
        ctx.save_for_backward(gathered, weight, rule)
        return gathered @ weight.reshape(out_c, 27 * in_c).T

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        gathered, weight, rule = ctx.saved_tensors
        out_c, in_c = weight.shape[0], weight.shape[-1]
        grad_weight = (grad.T @ gathered).reshape(weight.shape) if ctx.needs_input_grad[1] else None
        grad_features = None
        if ctx.needs_input_grad[0]:
            padded = torch.cat([grad, grad.new_zeros(1, out_c)])
            flipped = weight.reshape(out_c, 27, in_c).flip(1).permute(2, 1, 0).reshape(in_c, 27 * out_c)  # W_{26-k}^T
            grad_features = padded[rule].reshape(len(rule), 27 * out_c) @ flipped.T
        return grad_features, grad_weight, None


def _neighbours(volume: SparseVolume, out_coords: torch.Tensor, *, stride: int) -> torch.Tensor:
    """For each output voxel and kernel offset (z, y, x order), the row of the input voxel it reads
    (``stride`` * out + offset), or N (a zero row) where that voxel is not active: [M, 27] long."""
    table = _table(volume)
    base = out_coords * stride
    inputs = (base[:, None, :] + _OFFSETS.to(out_coords)[None]).reshape(-1, 3)
    rows = _lookup(inputs, table, volume.shape).reshape(-1, 27)
    return torch.where(rows >= 0, rows, torch.full_like(rows, volume.features.shape[0]))


class SparseSequential(nn.Sequential):
    """spconv's ``SparseSequential``: sparse convolutions act on the volume, everything else
    (BatchNorm1d, ReLU) on its features. Same key names as the official ``conv0.0.weight`` etc."""

    def forward(self, x: Any) -> Any:
        for layer in self:
            if isinstance(layer, SparseConv3d):
                x = layer(x)
            elif isinstance(x, SparseVolume):
                x = x.replace(layer(x.features))
            else:  # a spconv tensor
                x = x.replace_feature(layer(x.features))
        return x


def _conv_block(in_channels: int, out_channels: int, count: int, key: str) -> SparseSequential:
    layers: list[nn.Module] = []
    for i in range(count):
        layers += [SparseConv3d(in_channels if i == 0 else out_channels, out_channels, indice_key=key), nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01), nn.ReLU()]
    return SparseSequential(*layers)


def _down_block(in_channels: int, out_channels: int, key: str) -> SparseSequential:
    return SparseSequential(SparseConv3d(in_channels, out_channels, stride=2, indice_key=key), nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01), nn.ReLU())


class SparseConvNet(nn.Module):
    """The sparse encoder of Neural Body that SHERF and TransHuman keep (key names ``conv0..4``,
    ``down0..3``): conv0 (2 submanifold convs) -> down0 -> conv1 (2) -> down1 -> conv2 (3) -> down2 ->
    conv3 (3) -> down3 -> conv4 (3), BatchNorm1d (eps 1e-3, momentum 0.01) and ReLU after each.

    Args:
        in_channels: features per input voxel.
        channels: output channels of (conv0, conv1, conv2, conv3, conv4); each down block maps the
            previous stage's channels to the next one's.
    """

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = channels
        self.conv0 = _conv_block(in_channels, c0, 2, "subm0")
        self.down0 = _down_block(c0, c1, "down0")
        self.conv1 = _conv_block(c1, c1, 2, "subm1")
        self.down1 = _down_block(c1, c2, "down1")
        self.conv2 = _conv_block(c2, c2, 3, "subm2")
        self.down2 = _down_block(c2, c3, "down2")
        self.conv3 = _conv_block(c3, c3, 3, "subm3")
        self.down3 = _down_block(c3, c4, "down3")
        self.conv4 = _conv_block(c4, c4, 3, "subm4")

    def stages(self, volume: SparseVolume, *, count: int = 3, backend: str = "auto") -> list[SparseVolume]:
        """The outputs of conv1, conv2, conv3 (the first ``count`` of them), as SHERF samples them.

        Args:
            backend: "torch", "spconv" (needs spconv installed) or "auto": spconv when installed, except
                on a CPU with gradients on (spconv 2.3.8's CPU build runs forward only).
        """
        cpu_grad = not volume.features.is_cuda and torch.is_grad_enabled()
        use_spconv = backend == "spconv" or (backend == "auto" and spconv_available() and not cpu_grad)
        if use_spconv and not spconv_available():
            raise StudioError("the spconv backend needs spconv (pip install spconv==2.3.8 cumm==0.7.11)")
        if use_spconv and cpu_grad:  # spconv 2.3.8's CPU backward asks for a CUDA stream and fails
            raise StudioError("spconv's CPU build cannot train (its backward needs CUDA); use sparse_backend=torch")
        x: Any = volume
        if not use_spconv:
            if not volume.rules:  # neighbour tables are kept per set of voxels: the canonical body's repeat every call
                volume.rules = self._rules_for(volume)
            return self._run(x, count)
        # spconv asks torch.fx whether it is tracing, which logs a warning; spconv 2.3.8's CPU kernels
        # give wrong sums when torch runs them on several threads (measured: errors of ~0.1 on unit
        # features with 2 threads, exact with 1), so its CPU path runs on one.
        from studio.fit.fitter import one_torch_thread

        fx_log = logging.getLogger("torch.fx._symbolic_trace")
        level = fx_log.level
        fx_log.setLevel(logging.ERROR)
        try:
            with contextlib.nullcontext() if volume.features.is_cuda else one_torch_thread():
                indices = torch.cat([torch.zeros_like(volume.coords[:, :1]), volume.coords], 1).int()
                outs = self._run(_spconv_module().SparseConvTensor(volume.features, indices, list(volume.shape), 1), count)
        finally:
            fx_log.setLevel(level)
        return [SparseVolume(o.features, o.indices[:, 1:].long(), tuple(int(s) for s in o.spatial_shape)) for o in outs]

    def _rules_for(self, volume: SparseVolume) -> dict:
        import hashlib

        key = (volume.shape, str(volume.coords.device), hashlib.blake2b(volume.coords.cpu().numpy().tobytes(), digest_size=16).hexdigest())
        cache = self.__dict__.setdefault("_rule_cache", OrderedDict())
        if key not in cache:
            cache[key] = {}
            while len(cache) > 4:
                cache.popitem(last=False)
        return cache[key]

    def _run(self, x: Any, count: int) -> list[Any]:
        x = self.down0(self.conv0(x))
        outs = []
        for stage, (conv, down) in enumerate(((self.conv1, self.down1), (self.conv2, self.down2), (self.conv3, self.down3))):
            x = conv(x)
            outs.append(x)
            if stage + 1 == count:
                break
            x = down(x)
        return outs


def sample_sparse(volume: SparseVolume, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of a sparse volume, exactly what ``F.grid_sample(volume.dense()[None], grid,
    align_corners=True, padding_mode="zeros")`` gives, without building the dense grid.

    Args:
        grid: [N, 3] normalised coordinates (x, y, z) in [-1, 1] (x along W, y along H, z along D).
    Returns:
        [N, C].
    """
    D, H, W = volume.shape
    size = grid.new_tensor([W - 1, H - 1, D - 1])
    pos = (grid + 1) * 0.5 * size  # continuous (x, y, z) voxel index
    base = torch.floor(pos)
    frac = pos - base
    corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], device=grid.device)  # [8, 3] (x, y, z)
    xyz = base.long()[:, None, :] + corners[None]  # [N, 8, 3]
    weights = torch.where(corners.bool()[None], frac[:, None, :], 1 - frac[:, None, :]).prod(-1)  # [N, 8]
    rows = _lookup(xyz.reshape(-1, 3)[:, [2, 1, 0]], _table(volume), volume.shape).reshape(-1, 8)
    padded = torch.cat([volume.features, volume.features.new_zeros(1, volume.features.shape[1])])  # row N: zeros
    rows = torch.where(rows >= 0, rows, torch.full_like(rows, volume.features.shape[0]))
    return torch.einsum("nk,nkc->nc", weights, padded[rows])


# ==================================================================================================
# Rays and samples
# ==================================================================================================


def official_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """studio's intrinsics (a pixel's centre at +0.5) in the convention of the official codes' data
    (OpenCV calibration: pixel centres at integer coordinates): the principal point moved by -0.5."""
    K = K.clone()
    K[..., 0, 2] -= 0.5
    K[..., 1, 2] -= 0.5
    return K


def pixel_rays(K: torch.Tensor, extrinsics: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel as both official codes cast them: through integer pixel coordinates of
    ``K`` (official convention, see ``official_intrinsics``), directions not normalised but with a
    camera-space depth of 1 (so ray parameters are depths along the camera axis).

    Args:
        K: [3, 3] intrinsics (official convention); extrinsics: [4, 4] world -> camera (OpenCV axes).
        size: (height, width).
    Returns:
        origins [H*W, 3] and directions [H*W, 3], world, row-major pixel order.
    """
    h, w = size
    v, u = torch.meshgrid(torch.arange(h, dtype=K.dtype, device=K.device), torch.arange(w, dtype=K.dtype, device=K.device), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    cam = pix @ torch.linalg.inv(K).T
    R, t = extrinsics[:3, :3], extrinsics[:3, 3]
    directions = cam @ R  # R^T applied to row vectors
    origins = (-R.T @ t).expand_as(directions)
    return origins, directions


def ray_box(origins: torch.Tensor, directions: torch.Tensor, box: torch.Tensor, *, pad: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays enter and leave an axis-aligned box widened by ``pad`` (the official 1 cm).

    Args:
        origins, directions: [R, 3]; box: [2, 3] (min corner, max corner).
    Returns:
        near [R], far [R] (ray parameters) and hit [R] bool (the ray crosses the box ahead of its origin).
    """
    lo, hi = box[0] - pad, box[1] + pad
    d = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0, t1 = (lo - origins) / d, (hi - origins) / d
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    hit = (far > near) & (far > 0)
    return near.clamp_min(0), far, hit


def sample_depths(near: torch.Tensor, far: torch.Tensor, count: int, *, jitter: torch.Generator | None = None) -> torch.Tensor:
    """``count`` evenly spaced ray parameters from near to far inclusive (the official test sampling),
    or, with ``jitter``, one uniform sample in each interval around them (stratified, for training).

    Args:
        near, far: [R]. Returns: [R, count].
    """
    t = torch.linspace(0.0, 1.0, count, device=near.device, dtype=near.dtype)
    z = near[:, None] * (1 - t) + far[:, None] * t
    if jitter is None or count < 2:
        return z
    mids = 0.5 * (z[:, 1:] + z[:, :-1])
    upper = torch.cat([mids, z[:, -1:]], -1)
    lower = torch.cat([z[:, :1], mids], -1)
    u = torch.rand(z.shape, generator=jitter, dtype=z.dtype).to(z.device)
    return lower + (upper - lower) * u


def body_box(vertices: torch.Tensor, pad: Sequence[float]) -> torch.Tensor:
    """The axis-aligned box of vertices [V, 3] widened by ``pad`` (x, y, z) metres: [2, 3]."""
    p = vertices.new_tensor(pad)
    return torch.stack([vertices.amin(0) - p, vertices.amax(0) + p])


class VertexGrid:
    """Exact nearest-vertex and within-radius queries against one vertex set (no pytorch3d).

    Two implementations of the same function: in torch (the reference, and the GPU path), vertices
    are bucketed in cubic cells of ``cell`` metres (a dense table of per-cell ranges); a point whose
    nearest vertex lies within ``cell`` finds it among the 27 cells around its own, and the candidates
    of all points are expanded into (point, vertex) pairs in bounded chunks. On a CPU, scipy's k-d tree
    answers the same queries an order of magnitude faster (``backend="auto"``). Points with no vertex
    that close get distance ``inf`` and index -1 (``nearest``), or a full search (``nearest_exact``).
    """

    def __init__(self, vertices: torch.Tensor, *, cell: float, backend: str = "auto") -> None:
        if backend not in ("auto", "torch", "kdtree"):
            raise ValueError(f"backend must be auto, torch or kdtree, got {backend!r}")
        self.vertices = vertices
        self.cell = float(cell)
        self.backend = "kdtree" if backend == "kdtree" or (backend == "auto" and not vertices.is_cuda) else "torch"
        self._tree = None
        if self.backend == "kdtree":
            from scipy.spatial import cKDTree

            self._tree = cKDTree(vertices.detach().cpu().double().numpy())
            return
        self.origin = vertices.amin(0) - self.cell
        dims = ((vertices.amax(0) - self.origin) / self.cell).floor().long() + 2
        self.dims = dims
        lin = self._linear(self._cell_of(vertices))
        self.order = torch.argsort(lin)
        counts = torch.bincount(lin, minlength=int(dims.prod()))
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        occupied = (counts > 0).reshape(*dims.tolist()).float()[None, None]
        self.near_cells = (F.max_pool3d(occupied, 3, 1, 1)[0, 0] > 0).reshape(-1)  # any vertex in the 27 cells

    def _query_tree(self, points: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
        dist, index = self._tree.query(points.detach().cpu().double().numpy(), k=1, distance_upper_bound=bound, workers=-1)
        found = np.isfinite(dist)
        index = np.where(found, index, -1)
        return torch.from_numpy(dist).to(points), torch.from_numpy(index).long().to(points.device)

    def _cell_of(self, points: torch.Tensor) -> torch.Tensor:
        return ((points - self.origin) / self.cell).floor().long()

    def _linear(self, cells: torch.Tensor) -> torch.Tensor:
        d = self.dims
        return (cells[..., 0] * d[1] + cells[..., 1]) * d[2] + cells[..., 2]

    def _inside(self, cells: torch.Tensor) -> torch.Tensor:
        return ((cells >= 0) & (cells < self.dims)).all(-1)

    def nearest(self, points: torch.Tensor, *, block: int = 1 << 16, pairs: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
        """For each point [N, 3]: (distance [N], vertex index [N] long) of its nearest vertex when
        that lies within ``cell``; (inf, -1) when no vertex is that close. Points are taken in blocks
        of ``block``, and their (point, candidate vertex) pairs in chunks of about ``pairs``."""
        if self._tree is not None:
            return self._query_tree(points, self.cell * (1 + 1e-9))
        dist = points.new_full((points.shape[0],), float("inf"))
        index = torch.full((points.shape[0],), -1, dtype=torch.long, device=points.device)
        cells = self._cell_of(points)
        inside = self._inside(cells)
        candidates = inside.clone()
        candidates[inside] = self.near_cells[self._linear(cells[inside])]
        rows = candidates.nonzero()[:, 0]
        offsets = _OFFSETS.to(points.device)
        for b0 in range(0, len(rows), block):
            r = rows[b0 : b0 + block]
            around = cells[r][:, None, :] + offsets[None]  # [n, 27, 3]
            lin = self._linear(around.clamp_min(0)).clamp_max(len(self.counts) - 1)
            count = torch.where(self._inside(around), self.counts[lin], torch.zeros_like(lin))  # [n, 27]
            first = self.starts[lin]
            total = torch.cumsum(count.sum(1), 0)
            start = 0
            while start < len(r):
                already = int(total[start - 1]) if start else 0
                stop = max(start + 1, int(torch.searchsorted(total, already + pairs, right=True)))
                self._search(points, r[start:stop], count[start:stop].reshape(-1), first[start:stop].reshape(-1), dist, index)
                start = stop
        return dist, index

    def _search(self, points: torch.Tensor, r: torch.Tensor, count: torch.Tensor, first: torch.Tensor, dist: torch.Tensor, index: torch.Tensor) -> None:
        """The nearest candidate of points ``r`` (their 27 cells' vertex ranges ``first``/``count``), written into dist/index."""
        n = len(r)
        total = int(count.sum())
        if total == 0:
            return
        owner = torch.arange(n, device=points.device).repeat_interleave(27).repeat_interleave(count)
        within = torch.arange(total, device=points.device) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        vid = self.order[first.repeat_interleave(count) + within]
        d = (points[r][owner] - self.vertices[vid]).norm(dim=-1)
        best = torch.full((n,), float("inf"), dtype=d.dtype, device=d.device).scatter_reduce(0, owner, d, reduce="amin")
        at_min = d == best[owner]  # the smallest vertex index among pairs at the minimum (deterministic ties)
        pick = torch.full((n,), len(self.vertices), dtype=torch.long, device=d.device).scatter_reduce(0, owner[at_min], vid[at_min], reduce="amin")
        close = best <= self.cell
        dist[r[close]] = best[close]
        index[r[close]] = pick[close]

    def nearest_exact(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact nearest vertex of every point (a brute-force search for those farther than ``cell``)."""
        if self._tree is not None:
            return self._query_tree(points, float("inf"))
        dist, index = self.nearest(points)
        far = (index < 0).nonzero()[:, 0]
        if len(far):
            d, i = knn(points[far], self.vertices, 1)
            dist[far], index[far] = d[:, 0], i[:, 0]
        return dist, index

    def within(self, points: torch.Tensor, radius: float) -> torch.Tensor:
        """Whether each point [N, 3] has a vertex within ``radius`` (at most ``cell``): [N] bool."""
        if radius > self.cell:
            raise ValueError(f"radius {radius} exceeds the grid's cell {self.cell}")
        dist, _ = self.nearest(points)
        return dist < radius


def knn(points: torch.Tensor, refs: torch.Tensor, k: int, *, chunk: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force k nearest neighbours (exact, chunked): points [N, 3], refs [M, 3] -> (distances
    [N, k] ascending, indices [N, k] long)."""
    step = max(1, chunk // max(refs.shape[0], 1))
    dists, ids = [], []
    for i in range(0, points.shape[0], step):
        d = torch.cdist(points[i : i + step], refs, compute_mode="donot_use_mm_for_euclid_dist")
        v, j = torch.topk(d, k, dim=1, largest=False)
        dists.append(v)
        ids.append(j)
    if not dists:
        return points.new_zeros(0, k), torch.zeros(0, k, dtype=torch.long, device=points.device)
    return torch.cat(dists), torch.cat(ids)


# ==================================================================================================
# Volume rendering
# ==================================================================================================

FAR_DELTA = 1e10  # the interval after the last sample, as in NeRF's raw2outputs


@dataclasses.dataclass
class Composited:
    rgb: torch.Tensor  # [R, 3]
    opacity: torch.Tensor  # [R]
    depth: torch.Tensor  # [R] ray parameter


def _intervals(z: torch.Tensor, ray_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end distances of each sample's interval (NeRF's: to the next sample, the last one
    open-ended), in metres along the ray: [R, S] each."""
    deltas = torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], FAR_DELTA)], -1)
    starts = z * ray_norm[:, None]
    return starts, starts + deltas * ray_norm[:, None]


def composite(sigmas: torch.Tensor, rgbs: torch.Tensor, z: torch.Tensor, ray_norm: torch.Tensor, *, background: float = 0.0) -> Composited:
    """Volume rendering of samples along rays with NeRF's quadrature (alpha = 1 - exp(-relu(sigma) *
    delta * |d|), delta to the next sample, the last one open-ended), on nerfacc's batched functions
    (which run on a CPU).

    Args:
        sigmas: [R, S] raw densities (ReLU applied here); rgbs: [R, S, 3] colours in [0, 1];
        z: [R, S] ray parameters (increasing); ray_norm: [R] lengths of the ray directions.
        background: grey level composited behind (0 = black, as both official codes).
    """
    import nerfacc

    starts, ends = _intervals(z, ray_norm)
    weights, _, _ = nerfacc.render_weight_from_density(starts, ends, F.relu(sigmas))
    rgb = nerfacc.accumulate_along_rays(weights, rgbs)
    opacity = nerfacc.accumulate_along_rays(weights, None)[:, 0]
    depth = nerfacc.accumulate_along_rays(weights, z[..., None])[:, 0]
    return Composited(rgb + background * (1 - opacity[:, None]), opacity, depth)


def composite_packed(
    sigmas: torch.Tensor, rgbs: torch.Tensor, z: torch.Tensor, ray_norm: torch.Tensor, keep: torch.Tensor, *, background: float = 0.0
) -> Composited:
    """``composite`` evaluated on the kept samples only, with nerfacc's packed CUDA functions (the GPU
    path). Samples not kept have zero density, so the result equals ``composite`` of the full batch.

    Args:
        sigmas [N], rgbs [N, 3]: the kept samples' raw densities and colours, in the order of
        ``keep.nonzero()``; z: [R, S] every sample's ray parameter; ray_norm: [R]; keep: [R, S] bool.
    """
    import nerfacc

    if not z.is_cuda:
        raise StudioError("packed compositing runs on CUDA only; use composite() on a CPU")
    starts, ends = _intervals(z, ray_norm)
    rays, _ = keep.nonzero(as_tuple=True)
    n = z.shape[0]
    weights, _, _ = nerfacc.render_weight_from_density(starts[keep], ends[keep], F.relu(sigmas), ray_indices=rays, n_rays=n)
    rgb = nerfacc.accumulate_along_rays(weights, rgbs, ray_indices=rays, n_rays=n)
    opacity = nerfacc.accumulate_along_rays(weights, None, ray_indices=rays, n_rays=n)[:, 0]
    depth = nerfacc.accumulate_along_rays(weights, z[keep][:, None], ray_indices=rays, n_rays=n)[:, 0]
    return Composited(rgb + background * (1 - opacity[:, None]), opacity, depth)


def composite_reference(sigmas: torch.Tensor, rgbs: torch.Tensor, z: torch.Tensor, ray_norm: torch.Tensor) -> Composited:
    """The brute-force quadrature ``composite`` is tested against: NeRF's raw2outputs sample by sample."""
    R, S = sigmas.shape
    deltas = torch.cat([z[:, 1:] - z[:, :-1], torch.full_like(z[:, :1], FAR_DELTA)], -1) * ray_norm[:, None]
    rgb = torch.zeros(R, 3, dtype=sigmas.dtype)
    opacity = torch.zeros(R, dtype=sigmas.dtype)
    depth = torch.zeros(R, dtype=sigmas.dtype)
    transmittance = torch.ones(R, dtype=sigmas.dtype)
    for s in range(S):
        alpha = 1 - torch.exp(-torch.clamp(sigmas[:, s], min=0) * deltas[:, s])
        w = transmittance * alpha
        rgb += w[:, None] * rgbs[:, s]
        opacity += w
        depth += w * z[:, s]
        transmittance = transmittance * (1 - alpha)
    return Composited(rgb, opacity, depth)


# --- rendering a body's rays -------------------------------------------------------------------------

EMPTY_DENSITY = -80.0  # what both official codes give samples they do not evaluate (0 after the ReLU)
Field = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How a method samples rays around a body (its official test settings)."""

    samples: int
    """Evenly spaced samples per ray between the box's near and far points."""
    radius: float
    """Only samples within this distance (metres) of a body vertex are evaluated; the rest are empty."""
    box_pad: tuple[float, float, float]
    """Padding (x, y, z metres) of the posed body's box that bounds the rays."""


def render_rays(
    origins: torch.Tensor, directions: torch.Tensor, vertices: torch.Tensor, field: Field, *, sampling: Sampling,
    grid: VertexGrid | None = None, jitter: torch.Generator | None = None, chunk: int = 32768, background: float = 0.0,
) -> Composited:  # fmt: skip
    """Render rays through a posed body: samples in the body's box, the field evaluated at those
    within ``sampling.radius`` of a vertex (the others empty), NeRF's quadrature.

    Args:
        origins, directions: [R, 3] world (directions as ``pixel_rays`` makes them).
        vertices: [V, 3] the posed body (world).
        field: (points [N, 3], ray directions [N, 3], nearest vertex [N]) -> (raw sigma [N], rgb [N, 3]).
        grid: a ``VertexGrid`` of ``vertices`` with cell ``sampling.radius`` (built when None).
        jitter: stratified sampling from this generator (training); None: the official even samples.
    Returns:
        Composited with rgb [R, 3], opacity [R], depth [R] (rays missing the box: background, 0, 0).
    """
    R = origins.shape[0]
    box = body_box(vertices, sampling.box_pad)
    near, far, hit = ray_box(origins, directions, box)
    rgb = origins.new_full((R, 3), background)
    opacity, depth = origins.new_zeros(R), origins.new_zeros(R)
    rays = hit.nonzero()[:, 0]
    if len(rays) == 0:
        return Composited(rgb, opacity, depth)
    z = sample_depths(near[rays], far[rays], sampling.samples, jitter=jitter)  # [Rh, S]
    d = directions[rays]
    points = origins[rays][:, None] + d[:, None] * z[..., None]  # [Rh, S, 3]
    grid = grid or VertexGrid(vertices, cell=sampling.radius)
    with torch.no_grad():
        dist, nearest = grid.nearest(points.reshape(-1, 3))
    keep = (dist < sampling.radius).reshape(z.shape)
    flat = keep.reshape(-1).nonzero()[:, 0]
    sig_parts, rgb_parts = [], []
    dirs = d[:, None].expand_as(points).reshape(-1, 3)
    for start in range(0, len(flat), chunk):
        i = flat[start : start + chunk]
        s, c = field(points.reshape(-1, 3)[i], dirs[i], nearest[i])
        sig_parts.append(s)
        rgb_parts.append(c)
    sig_kept = torch.cat(sig_parts) if sig_parts else points.new_zeros(0)
    rgb_kept = torch.cat(rgb_parts) if rgb_parts else points.new_zeros(0, 3)
    norm = d.norm(dim=-1)
    if z.is_cuda:
        out = composite_packed(sig_kept, rgb_kept, z, norm, keep, background=background)
    else:
        sigmas = torch.full(z.shape, EMPTY_DENSITY, dtype=points.dtype, device=points.device).reshape(-1).index_put((flat,), sig_kept).reshape(z.shape)
        colours = points.new_zeros(z.numel(), 3).index_put((flat,), rgb_kept).reshape(*z.shape, 3)
        out = composite(sigmas, colours, z, norm, background=background)
    rgb = rgb.index_put((rays,), out.rgb)
    opacity = opacity.index_put((rays,), out.opacity)
    depth = depth.index_put((rays,), out.depth)
    return Composited(rgb, opacity, depth)


def render_image(
    K: torch.Tensor, extrinsics: torch.Tensor, size: tuple[int, int], vertices: torch.Tensor, field: Field, *, sampling: Sampling,
    rays_per_chunk: int = 8192, background: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A whole image of a posed body: (rgb [H, W, 3], opacity [H, W]), rays in chunks.

    Args:
        K: [3, 3] intrinsics in the official convention (``official_intrinsics``); extrinsics: [4, 4].
    """
    origins, directions = pixel_rays(K, extrinsics, size)
    grid = VertexGrid(vertices, cell=sampling.radius)
    rgb, opacity = [], []
    for start in range(0, origins.shape[0], rays_per_chunk):
        sl = slice(start, start + rays_per_chunk)
        out = render_rays(origins[sl], directions[sl], vertices, field, sampling=sampling, grid=grid, background=background)
        rgb.append(out.rgb)
        opacity.append(out.opacity)
    h, w = size
    return torch.cat(rgb).reshape(h, w, 3), torch.cat(opacity).reshape(h, w)


def facing_vertices(vertices: torch.Tensor, faces: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Vertices whose normal faces the camera (SHERF's visibility; no occlusion test): [V] bool."""
    from studio.render import vertex_normals

    normals = vertex_normals(vertices[None], faces)[0] @ extrinsics[:3, :3].T
    cam = vertices @ extrinsics[:3, :3].T + extrinsics[:3, 3]
    return (normals * cam).sum(-1) < 0


def seen_vertices(condition: Any, body_model: Any, *, tolerance: float = 0.03) -> torch.Tensor:
    """Vertices the condition's camera sees (rasterised depth test, TransHuman's visibility): [V] bool.

    Args:
        condition: a one-frame HumanCondition whose camera is the reference view's (studio convention).
        tolerance: metres a vertex may lie behind the rendered surface and still count as seen.
    """
    depth = torch.from_numpy(condition.render(("depth_metric",), body_model=body_model)["depth_metric"][0])
    with torch.no_grad():
        vertices = condition.posed(body_model).vertices[0]
    cam = vertices @ condition.camera.extrinsics[0, :3, :3].T + condition.camera.extrinsics[0, :3, 3]
    uvw = cam @ condition.camera.K[0].T
    uv = uvw[:, :2] / uvw[:, 2:].clamp_min(1e-6)
    h, w = depth.shape
    px = uv.floor().long()
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h) & (cam[:, 2] > 0)
    surface = torch.zeros(len(vertices))
    surface[inside] = depth[px[inside, 1], px[inside, 0]]
    return inside & (surface > 0) & (cam[:, 2] <= surface + tolerance)


def load_npy_object(path: str | Path, *, source: str = "") -> Any:
    """An .npy file (e.g. a pickled dict saved with ``np.save``) read without ``allow_pickle``: its
    header is parsed and an object payload goes through ``RestrictedUnpickler`` (numpy arrays only)."""
    from numpy.lib import format as npformat

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: missing" + (f" (from {source})" if source else ""))
    try:
        with open(path, "rb") as f:
            version = npformat.read_magic(f)
            header = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
            shape, fortran, dtype = header(f)
            if not dtype.hasobject:
                count = int(np.prod(shape))
                array = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
                return array.reshape(shape, order="F" if fortran else "C")
            return RestrictedUnpickler(f, numpy=True).load()
    except RefusedGlobal as exc:
        raise StudioError(f"{path}: refused: {_first_line(exc)}") from None
    except _UNREADABLE as exc:
        raise StudioError(f"{path}: not a readable .npy file ({type(exc).__name__}: {_first_line(exc)})") from None


# ==================================================================================================
# Body warps (nearest-vertex skinning)
# ==================================================================================================


@dataclasses.dataclass(frozen=True)
class PosedBody:
    """One frame of a body, for moving arbitrary points with it (``unpose``/``pose``)."""

    vertices: torch.Tensor  # [V, 3] posed, world
    rest: torch.Tensor  # [V, 3] the same shape in the T-pose (studio's canonical "t")
    weights: torch.Tensor  # [V, B] skin weights
    transforms: torch.Tensor  # [B, 4, 4] rest -> posed world, per bone
    offsets: torch.Tensor  # [V, 3] pose correctives, rest space

    def to(self, device: torch.device | str) -> PosedBody:
        return PosedBody(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def posed_body(body_model: Any, params: Mapping[str, torch.Tensor]) -> PosedBody:
    """The body of ``params`` (one frame, each [1, D]) for warping points."""
    from studio.body.skinning import body_skinning

    with torch.no_grad():
        skin = body_skinning(body_model, {k: v.to(body_model.skin_weights.device) for k, v in params.items()}, canonical="t")
        vertices = skin.posed_vertices()[0]
    return PosedBody(vertices, skin.vertices, skin.weights, skin.transforms[0], skin.offsets[0])


class PosedBodyCache:
    """``posed_body`` remembered by parameter values (training revisits the same poses)."""

    def __init__(self, body_model: Any, *, size: int = 256) -> None:
        self.body_model, self.size = body_model, size
        self._bodies: OrderedDict = OrderedDict()

    def __call__(self, params: Mapping[str, torch.Tensor]) -> PosedBody:
        key = tuple((k, v.detach().cpu().numpy().tobytes()) for k, v in sorted(params.items()))
        if key not in self._bodies:
            self._bodies[key] = posed_body(self.body_model, params)
            while len(self._bodies) > self.size:
                self._bodies.popitem(last=False)
        return self._bodies[key]


def canonical_body(body_model: Any, *, pose: str = "big") -> PosedBody:
    """The body model's neutral shape in a canonical pose ("big": legs spread, SHERF's canonical space)."""
    from studio.body import canonical_pose

    return posed_body(body_model, {**body_model.default_shape(), **canonical_pose(pose)})


def body_params(condition: Any, frame: int = 0) -> dict[str, torch.Tensor]:
    """One frame's body parameters of a HumanCondition, each [1, D]."""
    return {k: v[frame : frame + 1] for k, v in condition.body.items()}


def blend(body: PosedBody, ids: torch.Tensor) -> torch.Tensor:
    """The blended rest -> posed transforms of vertices ``ids`` [N]: [N, 3, 4]."""
    return torch.einsum("nb,bij->nij", body.weights[ids], body.transforms[:, :3, :])


def unpose(points: torch.Tensor, ids: torch.Tensor, body: PosedBody) -> torch.Tensor:
    """Posed points [N, 3] back to the body's rest pose, each by the skinning of vertex ``ids`` [N],
    pose correctives taken off: [N, 3]."""
    A = blend(body, ids)
    return torch.linalg.solve(A[..., :3], (points - A[..., 3])[..., None])[..., 0] - body.offsets[ids]


def pose(points: torch.Tensor, ids: torch.Tensor, body: PosedBody) -> torch.Tensor:
    """Rest-pose points [N, 3] posed, each by the skinning of vertex ``ids`` [N], pose correctives
    added: [N, 3] world (the inverse of ``unpose``)."""
    A = blend(body, ids)
    q = points + body.offsets[ids]
    return torch.einsum("nij,nj->ni", A[..., :3], q) + A[..., 3]


def warp(points: torch.Tensor, ids: torch.Tensor, source: PosedBody, target: PosedBody) -> torch.Tensor:
    """Points [N, 3] of ``source`` moved onto ``target`` by the skinning of vertices ``ids`` [N] (both
    bodies of one body model): unposed from ``source``, changed from its shape to ``target``'s by
    the vertices' shape offsets, posed as ``target``. SHERF's "coarse deformation"."""
    q = unpose(points, ids, source) + (target.rest - source.rest)[ids]
    return pose(q, ids, target)


def warp_rotations(ids: torch.Tensor, source: PosedBody, target: PosedBody) -> torch.Tensor:
    """The rotation part of ``warp`` for directions: [N, 3, 3] (target's blended rotation times the
    inverse of source's)."""
    a = blend(source, ids)[..., :3]
    b = blend(target, ids)[..., :3]
    return b @ torch.linalg.inv(a)


def render_frames(
    target: Any, size: tuple[int, int], body_model: Any, make_field: Callable[[PosedBody], Field], *, sampling: Sampling,
    background: float = 0.0, device: torch.device | str = "cpu", on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:  # fmt: skip
    """Every frame of a target HumanCondition rendered by a field built per frame from the posed body.

    Args:
        target: T frames of target poses and cameras; size: (height, width) of the frames.
        make_field: the frame's PosedBody (on ``device``) -> the field to render.
    Returns:
        [T, H, W, 3] uint8.
    """
    camera = target.camera.resized(size)
    K = official_intrinsics(camera.K).to(device)
    E = camera.extrinsics.to(device)
    frames = np.empty((target.num_frames, *size, 3), np.uint8)
    for t in range(target.num_frames):
        body = posed_body(body_model, body_params(target, t)).to(device)
        with torch.no_grad():
            rgb, _ = render_image(K[t], E[t], size, body.vertices, make_field(body), sampling=sampling, background=background)
        frames[t] = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        if on_progress:
            on_progress(t + 1, target.num_frames)
    return frames


def match_body_model(body_model: Any, required: str, conditions: Sequence[Any], target: Any) -> tuple[Any, list[Any], Any]:
    """The references' and target's conditions on the body model a network was trained with: as
    they are when they already use it, else carried over by ``convert_condition`` (logged). Loading
    the required model raises one line naming its files (e.g. STUDIO_SMPL_DIR) when they are missing."""
    if body_model.name == required:
        return body_model, list(conditions), target
    from studio.body import load_body_model

    model = load_body_model(required)
    logger.warning(
        "the weights were trained on the %s body model but the references were fitted with %s; carrying the fit over "
        "(fitting the photos with %s directly is more faithful)", required, body_model.name, required,
    )  # fmt: skip
    return model, [convert_condition(c, body_model, model) for c in conditions], convert_condition(target, body_model, model)


def pick_device(choice: str) -> torch.device:
    """"auto" (CUDA when available), "cpu" or "cuda" (one line when there is none)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise StudioError("device=cuda asked for, but no CUDA GPU is available")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def photo_key(images: Sequence[np.ndarray], conditions: Sequence[Any], *extra: Any) -> str:
    """A digest of photos, their fitted bodies and cameras, and ``extra``: what a pipeline's encoding
    of them is remembered by (``studio animate`` calls a pipeline once per chunk of the same photo)."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for image in images:
        h.update(np.ascontiguousarray(image).tobytes())
    for condition in conditions:
        for key in sorted(condition.body):
            h.update(condition.body[key].detach().cpu().numpy().tobytes())
        h.update(condition.camera.K.cpu().numpy().tobytes() + condition.camera.extrinsics.cpu().numpy().tobytes())
    h.update(repr(extra).encode())
    return h.hexdigest()


def read_model_config(path: Path, config_class: type, *, config_file: str, studio_file: str, script: str) -> Any:
    """A checkpoint's network sizes: ``config_file`` beside it (required next to studio's
    ``studio_file``, optional next to a released file, whose sizes are the class's defaults)."""
    config_path = path.parent / config_file
    if path.suffix != ".safetensors" and not config_path.is_file():
        return config_class()
    if not config_path.is_file():
        raise StudioError(f"{config_path}: missing (written with {studio_file} by {script})")
    try:
        return config_class.from_json(config_path.read_text())
    except (ValueError, TypeError) as exc:
        raise StudioError(f"{config_path}: not a valid model config ({exc})") from None


class NerfTasks:
    """The ``novel_view`` and ``animate`` tasks of a NeRF pipeline whose ``render(references, masks,
    conditions, target, size, *, body_model, seed, on_progress)`` gives frames [T, H, W, 3] uint8
    (an animate request is one photo and the motion as the target)."""

    def render(self, references, masks, conditions, target, size, *, body_model, seed=0, on_progress=None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def novel_view(self, request: Any) -> Any:
        from studio.pipeline import NovelViewResult

        frames = self.render(
            request.references, request.reference_masks, request.reference_conditions, request.target, request.size,
            body_model=request.body_model, seed=request.seed, on_progress=request.on_progress,
        )  # fmt: skip
        return NovelViewResult(frames=frames)

    def animate(self, request: Any) -> Any:
        from studio.pipeline import AnimateResult

        masks = None if request.reference_mask is None else [request.reference_mask]
        frames = self.render(
            [request.reference], masks, [request.reference_condition], request.motion, request.size, body_model=request.body_model,
            seed=request.seed, on_progress=request.on_progress,
        )  # fmt: skip
        return AnimateResult(frames=frames)


# ==================================================================================================
# Reference photos
# ==================================================================================================


@dataclasses.dataclass
class ReferenceView:
    """A reference photo as the networks see it: a square crop around the person, resized, background black."""

    image: torch.Tensor  # [3, S, S] float in [0, 1]
    mask: torch.Tensor  # [S, S] bool
    K: torch.Tensor  # [3, 3] intrinsics of the crop, official convention (pixel centres at integers)
    extrinsics: torch.Tensor  # [4, 4] world -> camera

    @property
    def size(self) -> int:
        return int(self.image.shape[-1])


def person_box(mask: np.ndarray, fallback: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the mask's pixels > 127, else of ``fallback`` points [N, 2]."""
    ys, xs = np.nonzero(mask > 127)
    if len(xs) >= 16:
        return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    if fallback is None or len(fallback) == 0:
        raise StudioError("the reference shows no person (empty mask)")
    return float(fallback[:, 0].min()), float(fallback[:, 1].min()), float(fallback[:, 0].max()), float(fallback[:, 1].max())


def reference_view(
    image: np.ndarray, mask: np.ndarray | None, condition: Any, *, size: int = 512, margin: float = 0.1, body_model: Any = None
) -> ReferenceView:
    """The square crop of a photo around its person, resized to ``size``, background set to black
    (the official inputs), with its camera.

    Args:
        image: [H, W, 3] uint8; mask: [H, W] uint8 (255 = person), or None (the fitted body's silhouette).
        condition: the fitted one-frame HumanCondition (camera of the H x W image).
        margin: space around the person, as a share of the box's longer side.
    """
    import cv2

    H, W = image.shape[:2]
    cam = condition.camera.resized((H, W))
    K, E = cam.K[0].float(), cam.extrinsics[0].float()
    if mask is None:
        mask = (condition.render(("mask",), size=(H, W), body_model=body_model)["mask"][0]).astype(np.uint8)
    x0, y0, x1, y1 = person_box(mask)
    side = int(math.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2))
    pad = max(0, -left, -top, left + side - W, top + side - H)
    img = np.where((mask > 127)[..., None], image, 0).astype(np.uint8)
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    msk = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    crop = img[top + pad : top + pad + side, left + pad : left + pad + side]
    crop_mask = msk[top + pad : top + pad + side, left + pad : left + pad + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (size, size), interpolation=interp)
    crop_mask = cv2.resize(crop_mask, (size, size), interpolation=cv2.INTER_LINEAR) > 127
    crop = np.where(crop_mask[..., None], crop, 0)
    s = size / side
    K2 = K.clone()
    K2[0, 2] -= left
    K2[1, 2] -= top
    K2[:2] *= s
    return ReferenceView(
        image=torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0, mask=torch.from_numpy(crop_mask), K=official_intrinsics(K2), extrinsics=E
    )


def convert_condition(condition: Any, source_model: Any, target_model: Any) -> Any:
    """The person of a HumanCondition carried to another body model (e.g. a photo fitted with anny
    for a NeRF trained on SMPL): the pose fields as they are (every studio body model shares SMPL-X's
    joint names and T-pose convention), the target's shape fitted to the source's rest joints (a
    regularised linear least-squares step from the neutral shape, clamped to the model's range), and
    the translation set so that the pelvis stays where it was in every frame.

    A direct fit with the target model is more faithful; this is what is possible from the condition alone.
    """
    from studio.body import POSE_PARAM_DIMS

    if source_model.name == target_model.name:
        return condition
    T = condition.num_frames
    pose_fields = {k: v for k, v in condition.body.items() if k in POSE_PARAM_DIMS and k != "transl"}
    with torch.no_grad():
        source_shape = {**source_model.default_shape(), **{k: v[:1] for k, v in condition.body.items() if k not in POSE_PARAM_DIMS}}
        rest_source = source_model.joints(source_shape)[0, :22]
        target = rest_joints_shape_fit(target_model, rest_source - rest_source[:1])
        shape = {k: v.expand(T, -1) for k, v in target.items()}
        pelvis_source = source_model.joints(dict(condition.body))[:, 0]  # [T, 3]
        pelvis_target = target_model.joints({**shape, **pose_fields, "transl": torch.zeros(T, 3)})[:, 0]
    body = {**shape, **pose_fields, "transl": pelvis_source - pelvis_target}
    return dataclasses.replace(condition, body_model=target_model.name, body=body)


def rest_joints_shape_fit(model: Any, joints: torch.Tensor, *, ridge: float = 1e-3) -> dict[str, torch.Tensor]:
    """The shape of ``model`` whose T-pose body joints best match ``joints`` [22, 3] (relative to the
    pelvis), by one regularised least-squares step from the neutral shape: {field: [1, D]}."""
    base = model.default_shape()
    field = model.shape_field
    dims = base[field].shape[1]

    def rest(shape: torch.Tensor) -> torch.Tensor:
        j = model.joints({**base, field: shape})[0, :22]
        return (j - j[:1]).reshape(-1)

    j0 = rest(base[field])
    eps = 1e-2
    columns = []
    for i in range(dims):
        e = base[field].clone()
        e[0, i] += eps
        columns.append((rest(e) - j0) / eps)
    A = torch.stack(columns, 1)  # [66, D]
    b = joints.reshape(-1).to(A) - j0
    step = torch.linalg.solve(A.T @ A + ridge * torch.eye(dims), A.T @ b)
    shape = base[field] + step[None]
    if model.shape_bounds is not None:
        shape = shape.clamp(*model.shape_bounds)
    else:
        shape = shape.clamp(-5.0, 5.0)
    return {**base, field: shape}


# ==================================================================================================
# Metrics
# ==================================================================================================


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (any matching shapes)."""
    mse = float(((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Structural similarity of two [H, W, 3] images in [0, 1] (Gaussian window 11, sigma 1.5, the
    usual constants), averaged over pixels and channels."""
    x = torch.as_tensor(a, dtype=torch.float64).permute(2, 0, 1)[None]
    y = torch.as_tensor(b, dtype=torch.float64).permute(2, 0, 1)[None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


# ==================================================================================================
# Multi-view training data from studio's avatars
# ==================================================================================================

LAYOUTS = ("sherf", "transhuman")
BODY_FILE = "studio_body.npz"  # the poses of a subject as a HumanCondition (camera: the first view's)
CAMERAS_FILE = "cameras.json"


@dataclasses.dataclass
class AvatarSource:
    """A person to render: a photo, its person mask and the body fitted to it (one frame)."""

    name: str
    image: np.ndarray  # [H, W, 3] uint8
    mask: np.ndarray  # [H, W] uint8, 255 = person
    condition: Any  # HumanCondition, T=1


def avatar_source(path: str | Path, body_model: Any, *, name: str | None = None) -> AvatarSource:
    """Fit a photo (with hands and the person mask) into an ``AvatarSource``."""
    from studio.tasks import fit_photo

    image, ref, _ = fit_photo(Path(path), body_model)
    return AvatarSource(name or Path(path).stem, image, ref.keypoints.mask[0], ref.condition)


@dataclasses.dataclass
class MultiViewConfig:
    """How the generator renders each subject."""

    size: int = 256
    """Image side in pixels (square images)."""
    views: int = 8
    """Training cameras on a ring around the body."""
    heldout_views: int = 4
    """Extra cameras between the training ones (marked "heldout" in cameras.json), for evaluation."""
    poses: int = 8
    """Poses per subject, taken evenly from the motions."""
    distance: float = 2.8
    """Camera distance from the pelvis in metres."""
    elevation_deg: float = 8.0
    """Camera height above the pelvis, in degrees."""
    seed: int = 0
    """Seed of the random turn of each pose about the vertical."""

    def __post_init__(self) -> None:
        if not (32 <= self.size <= 2048 and 1 <= self.views <= 360 and 0 <= self.heldout_views <= 360 and 1 <= self.poses <= 10000):
            raise ValueError("size must be 32-2048, views 1-360, heldout_views 0-360, poses 1-10000")


def _pose_frames(motions: Sequence[Any], count: int, rng: np.random.Generator) -> list[dict[str, torch.Tensor]]:
    """``count`` pose-field sets taken evenly from the motions, each turned by a random yaw."""
    import roma

    from studio.body import POSE_PARAM_DIMS

    frames = [(m, t) for m in motions for t in range(m.num_frames)]
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    out = []
    for i in picks:
        motion, t = frames[i]
        fields = {k: v[t : t + 1].clone() for k, v in motion.body.items() if k in POSE_PARAM_DIMS and k != "transl"}
        yaw = roma.rotvec_to_rotmat(torch.tensor([[0.0, float(rng.uniform(-math.pi, math.pi)), 0.0]]))
        fields["global_orient"] = roma.rotmat_to_rotvec(yaw @ roma.rotvec_to_rotmat(fields["global_orient"]))
        out.append(fields)
    return out


def subject_poses(source: AvatarSource, motions: Sequence[Any], body_model: Any, config: MultiViewConfig) -> Any:
    """The subject's shape in poses from the motions, pelvis at the world origin: a HumanCondition of
    ``config.poses`` frames (camera: a placeholder, the first training view's)."""
    from studio.body import POSE_PARAM_DIMS
    from studio.condition import HumanCondition

    rng = np.random.default_rng(config.seed + sum(map(ord, source.name)))
    shape = {k: v[:1] for k, v in source.condition.body.items() if k not in POSE_PARAM_DIMS}
    frames = _pose_frames(motions, config.poses, rng)
    body = {k: torch.cat([f[k] for f in frames]) for k in frames[0]}
    body.update({k: v.expand(config.poses, -1).clone() for k, v in shape.items()})
    with torch.no_grad():
        pelvis = body_model.joints({**body, "transl": torch.zeros(config.poses, 3)})[:, 0]
    body["transl"] = -pelvis
    camera = ring_cameras(config)[0].index(slice(0, 1))
    cam = Camera(K=camera.K.expand(config.poses, 3, 3).clone(), extrinsics=camera.extrinsics.expand(config.poses, 4, 4).clone(), image_size=camera.image_size)
    return HumanCondition(body_model=body_model.name, body=body, camera=cam)


def ring_cameras(config: MultiViewConfig) -> tuple[Camera, list[str]]:
    """The training ring and the held-out cameras between its views: (cameras [V + Vh], split names)."""
    from studio.camera import orbit_cameras

    size = (config.size, config.size)
    focal = config.size * config.distance / 2.3  # a 2.3 m tall field of view at the pelvis
    elevation = math.radians(config.elevation_deg)
    train = orbit_cameras((0.0, 0.0, 0.0), radius=config.distance, image_size=size, num_frames=config.views, elevation=elevation, focal=focal)
    cams, split = [train], ["train"] * config.views
    if config.heldout_views:
        offset = math.pi / config.views
        held = orbit_cameras((0.0, 0.0, 0.0), radius=config.distance, image_size=size, num_frames=config.heldout_views, elevation=elevation, start_azimuth=offset, focal=focal)
        cams.append(held)
        split += ["heldout"] * config.heldout_views
    camera = Camera(K=torch.cat([c.K for c in cams]), extrinsics=torch.cat([c.extrinsics for c in cams]), image_size=size)
    return camera, split


def render_subject(source: AvatarSource, poses: Any, cameras: Camera, body_model: Any, *, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo-textured avatar of ``source`` in every pose from every camera, on black:
    (images [P, V, S, S, 3] uint8, masks [P, V, S, S] uint8 (255 = person))."""
    from studio.condition import HumanCondition
    from studio.texture import AvatarRenderer, build_avatar

    P, V = poses.num_frames, len(cameras)
    black = np.zeros((size, size, 3), np.uint8)
    avatar = build_avatar(source.image, source.mask, source.condition, body_model=body_model, output_size=(size, size), background=black)
    body = {k: v.repeat_interleave(V, 0) for k, v in poses.body.items()}
    cam = Camera(K=cameras.K.repeat(P, 1, 1), extrinsics=cameras.extrinsics.repeat(P, 1, 1), image_size=(size, size))
    condition = HumanCondition(body_model=body_model.name, body=body, camera=cam)
    renderer = AvatarRenderer(avatar, body_model, output_size=(size, size), supersample=2)
    try:
        on_black = renderer.render(condition)
        avatar.background = np.full_like(black, 255)
        on_white = renderer.render(condition)
    finally:
        renderer.release()
    alpha = 1.0 - (on_white.astype(np.float32) - on_black.astype(np.float32)).mean(-1) / 255.0
    masks = np.where(alpha > 0.5, 255, 0).astype(np.uint8)
    return on_black.reshape(P, V, size, size, 3), masks.reshape(P, V, size, size)


def _image_path(folder: Path, layout: str, pose: int, view: int, *, mask: bool) -> Path:
    if layout == "sherf":  # RenderPeople, as SHERF reads it
        return folder / ("mask" if mask else "img") / f"camera{view:04d}" / f"{pose:04d}.{'png' if mask else 'jpg'}"
    if layout == "transhuman":  # ZJU-MoCap, as TransHuman reads it
        return folder / ("mask/" if mask else "") / f"Camera_B{view + 1}" / f"{pose:06d}.{'png' if mask else 'jpg'}"
    raise StudioError(f"unknown dataset layout '{layout}'; choose one of {', '.join(LAYOUTS)}")


def write_subject(folder: Path, layout: str, images: np.ndarray, masks: np.ndarray, cameras: Camera, split: list[str], poses: Any, body_model: Any) -> None:
    """One subject in ``layout``'s folders: images, masks, ``cameras.json`` (official K, R, T per
    camera, plus each camera's split), ``studio_body.npz`` (the poses), and with the smpl body model
    the official SMPL parameter files (SHERF: ``outputs_re_fitting/refit_smpl_2nd.npz``; TransHuman:
    ``annots.npy``, ``params/``; both: ``vertices/``)."""
    from studio.media import write_image

    folder.mkdir(parents=True, exist_ok=True)
    P, V = images.shape[:2]
    for p in range(P):
        for v in range(V):
            write_image(_image_path(folder, layout, p, v, mask=False), images[p, v])
            write_image(_image_path(folder, layout, p, v, mask=True), masks[p, v])
    K = official_intrinsics(cameras.K)
    table = {
        f"camera{v:04d}": {"K": K[v].tolist(), "R": cameras.extrinsics[v, :3, :3].tolist(), "T": cameras.extrinsics[v, :3, 3:].tolist(), "split": split[v]}
        for v in range(V)
    }
    (folder / CAMERAS_FILE).write_text(json.dumps({"image_size": list(cameras.image_size), "cameras": table}, indent=1))
    poses.save(folder / BODY_FILE, body_model=body_model)
    with torch.no_grad():
        vertices = poses.posed(body_model).vertices.numpy()
    (folder / "vertices").mkdir(exist_ok=True)
    for p in range(P):
        np.save(folder / "vertices" / f"{p}.npy", vertices[p].astype(np.float32))
    if body_model.name == "smpl":
        _write_official_smpl(folder, layout, poses, body_model, cameras, V)


def _write_official_smpl(folder: Path, layout: str, poses: Any, body_model: Any, cameras: Camera, views: int) -> None:
    """The official codes' SMPL files (data for them; studio reads ``studio_body.npz``)."""
    import roma

    b = {k: v.numpy().astype(np.float32) for k, v in poses.body.items()}
    P = poses.num_frames
    body_pose = np.concatenate([b["body_pose"], np.zeros((P, 6), np.float32)], 1)  # + SMPL's two hand joints
    if layout == "sherf":
        smpl = {"betas": b["betas"][:1], "global_orient": b["global_orient"], "body_pose": body_pose, "transl": b["transl"]}
        (folder / "outputs_re_fitting").mkdir(exist_ok=True)
        np.savez(folder / "outputs_re_fitting" / "refit_smpl_2nd.npz", smpl=np.array(smpl, dtype=object))
        return
    with torch.no_grad():
        pelvis = body_model.joints({"betas": poses.body["betas"]})[:, 0].numpy()
    R = roma.rotvec_to_rotmat(poses.body["global_orient"]).numpy()
    (folder / "params").mkdir(exist_ok=True)
    for p in range(P):
        Th = pelvis[p] - R[p] @ pelvis[p] + b["transl"][p]
        poses72 = np.concatenate([np.zeros(3, np.float32), body_pose[p]])[None]
        np.save(folder / "params" / f"{p}.npy", {"poses": poses72, "shapes": b["betas"][p : p + 1], "Rh": b["global_orient"][p : p + 1], "Th": Th[None]}, allow_pickle=True)
    cams = {
        "K": [official_intrinsics(cameras.K[v]).numpy() for v in range(views)],
        "D": [np.zeros((5, 1)) for _ in range(views)],
        "R": [cameras.extrinsics[v, :3, :3].numpy() for v in range(views)],
        "T": [cameras.extrinsics[v, :3, 3:].numpy() * 1000.0 for v in range(views)],  # millimetres, as ZJU-MoCap
    }
    ims = [{"ims": [str(_image_path(Path(""), layout, p, v, mask=False)) for v in range(views)]} for p in range(P)]
    np.save(folder / "annots.npy", {"cams": cams, "ims": ims}, allow_pickle=True)


def generate_multiview_data(
    output: str | Path,
    sources: Sequence[AvatarSource],
    motions: Sequence[Any],
    *,
    body_model: Any,
    layout: str,
    config: MultiViewConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render every source's avatar in poses from ``motions`` from rings of cameras and write them
    in ``layout`` ("sherf": RenderPeople's folders; "transhuman": ZJU-MoCap's) under ``output``, one
    folder per subject, plus ``human_list.txt``. Returns ``output``."""
    if layout not in LAYOUTS:
        raise StudioError(f"unknown dataset layout '{layout}'; choose one of {', '.join(LAYOUTS)}")
    if not sources or not motions:
        raise StudioError("the generator needs at least one avatar source and one motion")
    config = config or MultiViewConfig()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    cameras, split = ring_cameras(config)
    names = []
    for i, source in enumerate(sources):
        poses = subject_poses(source, motions, body_model, config)
        images, masks = render_subject(source, poses, cameras, body_model, size=config.size)
        name = f"{i:03d}_{''.join(c if c.isalnum() else '_' for c in source.name)}"
        write_subject(output / name, layout, images, masks, cameras, split, poses, body_model)
        names.append(name)
        if on_progress:
            on_progress(i + 1, len(sources))
    (output / "human_list.txt").write_text("\n".join(names) + "\n")
    return output


@dataclasses.dataclass
class ViewSample:
    """One image of a subject: what a reference or a target of a training step needs."""

    image: np.ndarray  # [S, S, 3] uint8, black background
    mask: np.ndarray  # [S, S] uint8
    camera: Camera  # T=1, studio convention
    condition: Any  # HumanCondition T=1: the pose with this camera
    key: tuple[int, int, int] = (0, 0, 0)  # (subject, pose, view): what trainers cache per-view work by


@dataclasses.dataclass
class TrainingSample:
    references: list[ViewSample]
    target: ViewSample


class MultiViewDataset:
    """Subjects written by ``generate_multiview_data`` (either layout), read back with studio's
    files (``cameras.json``, ``studio_body.npz``; no pickles). Images are cached in memory."""

    def __init__(self, root: str | Path, *, layout: str, body_model: Any) -> None:
        from studio.condition import HumanCondition

        if layout not in LAYOUTS:
            raise StudioError(f"unknown dataset layout '{layout}'; choose one of {', '.join(LAYOUTS)}")
        self.root, self.layout, self.body_model = Path(root), layout, body_model
        folders = sorted(p for p in self.root.iterdir() if (p / CAMERAS_FILE).is_file() and (p / BODY_FILE).is_file()) if self.root.is_dir() else []
        if not folders:
            raise StudioError(f"{self.root}: no subjects (folders with {CAMERAS_FILE} and {BODY_FILE}); write some with generate_multiview_data")
        self.subjects = []
        for folder in folders:
            table = json.loads((folder / CAMERAS_FILE).read_text())
            cams = table["cameras"]
            names = sorted(cams)
            K = torch.tensor([cams[n]["K"] for n in names], dtype=torch.float32)
            K[:, :2, 2] += 0.5  # back to studio's convention
            E = torch.eye(4).repeat(len(names), 1, 1)
            E[:, :3, :3] = torch.tensor([cams[n]["R"] for n in names], dtype=torch.float32)
            E[:, :3, 3] = torch.tensor([cams[n]["T"] for n in names], dtype=torch.float32)[..., 0]
            camera = Camera(K=K, extrinsics=E, image_size=tuple(table["image_size"]))
            poses = HumanCondition.load(folder / BODY_FILE)
            if poses.body_model != body_model.name:
                raise StudioError(f"{folder}: posed with the {poses.body_model} body model, not {body_model.name}")
            split = [cams[n].get("split", "train") for n in names]
            self.subjects.append({"folder": folder, "camera": camera, "poses": poses, "split": split})
        self._cache: dict[tuple, np.ndarray] = {}

    def views(self, subject: int, split: str) -> list[int]:
        return [i for i, s in enumerate(self.subjects[subject]["split"]) if s == split]

    def _read(self, path: Path, *, mask: bool) -> np.ndarray:
        from studio.media import read_image

        key = (path, mask)
        if key not in self._cache:
            if mask:
                import cv2

                m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                if m is None:
                    raise StudioError(f"{path}: missing or unreadable mask")
                self._cache[key] = m
            else:
                self._cache[key] = read_image(path)
        return self._cache[key]

    def view(self, subject: int, pose: int, view: int) -> ViewSample:
        s = self.subjects[subject]
        folder = s["folder"]
        camera = s["camera"].index(slice(view, view + 1))
        condition = dataclasses.replace(s["poses"][pose], camera=camera)
        image = self._read(_image_path(folder, self.layout, pose, view, mask=False), mask=False)
        mask = self._read(_image_path(folder, self.layout, pose, view, mask=True), mask=True)
        return ViewSample(image, mask, camera, condition, (subject, pose, view))

    def sample(self, rng: np.random.Generator, *, references: int) -> TrainingSample:
        """A random target view of a random subject and pose, with ``references`` other training views
        of the same pose (fewer when the ring has too few)."""
        subject = int(rng.integers(len(self.subjects)))
        pose = int(rng.integers(self.subjects[subject]["poses"].num_frames))
        train = self.views(subject, "train")
        order = rng.permutation(train)
        target = int(order[0])
        refs = [int(v) for v in order[1 : 1 + references]] or [target]
        return TrainingSample([self.view(subject, pose, v) for v in refs], self.view(subject, pose, target))

    def heldout(self, *, references: int) -> Iterator[TrainingSample]:
        """Every held-out view of every subject and pose, with the first training views as references."""
        for subject in range(len(self.subjects)):
            train = self.views(subject, "train")
            step = max(1, len(train) // max(references, 1))
            refs = train[::step][:references]
            for pose in range(self.subjects[subject]["poses"].num_frames):
                for v in self.views(subject, "heldout"):
                    yield TrainingSample([self.view(subject, pose, r) for r in refs], self.view(subject, pose, v))


@dataclasses.dataclass
class NerfTrainConfig:
    """The training loop's settings (shared by both pipelines' train.py)."""

    steps: int = 2000
    """Optimiser steps (the loop also stops at ``time_budget``)."""
    learning_rate: float = 5e-4
    """Adam's learning rate, decayed by a cosine to a tenth over ``steps``."""
    rays: int = 1024
    """Target rays per step (half drawn from the person's box, half anywhere)."""
    references: int = 1
    """Reference views per step."""
    seed: int = 0
    """Seed of the data order and ray sampling (each process adds its index)."""
    save_every: int = 500
    """Write the weights every this many steps (and at the end)."""
    time_budget: float | None = None
    """Stop after this many seconds (None: run all steps)."""

    def __post_init__(self) -> None:
        if not (1 <= self.steps <= 10_000_000 and self.learning_rate > 0 and 1 <= self.rays <= 1 << 20 and 1 <= self.references <= 16):
            raise ValueError("steps must be 1-10^7, learning_rate > 0, rays 1-2^20, references 1-16")


def target_rays(sample: ViewSample, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pixels of a target view: (pixel indices [R] row-major, colours [R, 3] in [0, 1], mask
    [R] in {0, 1}); half are drawn inside the person's box, where the signal is."""
    h, w = sample.image.shape[:2]
    ys, xs = np.nonzero(sample.mask > 127)
    inside = count // 2 if len(xs) else 0
    pix = rng.integers(0, h * w, count - inside)
    if inside:
        y = rng.integers(ys.min(), ys.max() + 1, inside)
        x = rng.integers(xs.min(), xs.max() + 1, inside)
        pix = np.concatenate([pix, y * w + x])
    image = torch.from_numpy(sample.image.reshape(-1, 3)[pix]).float() / 255.0
    mask = torch.from_numpy((sample.mask.reshape(-1)[pix] > 127).astype(np.float32))
    return torch.from_numpy(pix), image, mask


def train_nerf(
    model: nn.Module,
    dataset: MultiViewDataset,
    *,
    config: NerfTrainConfig,
    save: Callable[[nn.Module], None],
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """The training loop of both NeRF pipelines, on accelerate (``accelerate launch`` runs it on
    several GPUs or machines: each process draws its own samples, gradients are averaged).

    Args:
        model: ``model(sample, rng)`` -> {"loss": scalar tensor, other named terms}.
        save: writes the (unwrapped) model's weights; called on the main process only.
    Returns:
        The logged terms of every step.
    """
    import time

    from accelerate import Accelerator, DistributedDataParallelKwargs

    # Networks keep modules the released files hold but never run (frozen by the trainers; this covers the rest).
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rng = np.random.default_rng(config.seed + accelerator.process_index)
    torch.manual_seed(config.seed + accelerator.process_index)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps)))
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    history, started = [], time.monotonic()
    for step in range(1, config.steps + 1):
        terms = model(dataset.sample(rng, references=config.references), rng)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(terms["loss"])
        optimizer.step()
        scheduler.step()
        logged = {k: float(v.detach()) for k, v in terms.items()}
        history.append(logged)
        if on_log:
            on_log(step, logged)
        done = step == config.steps or (config.time_budget is not None and time.monotonic() - started >= config.time_budget)
        if config.time_budget is not None and accelerator.num_processes > 1:  # all processes stop at the same step
            done = bool(accelerator.reduce(torch.tensor([float(done)], device=accelerator.device), reduction="max").item() > 0)
        if accelerator.is_main_process and (step % config.save_every == 0 or done):
            save(accelerator.unwrap_model(model))
        if done:
            break
    accelerator.wait_for_everyone()
    return history


def person_crop(image: np.ndarray, mask: np.ndarray, *, margin: float = 0.05) -> tuple[slice, slice]:
    """The rows and columns of a mask's bounding box, widened by ``margin`` of its size (where the
    held-out metrics are computed, as the official evaluations crop to the body's box)."""
    ys, xs = np.nonzero(mask > 127)
    if len(xs) == 0:
        return slice(0, image.shape[0]), slice(0, image.shape[1])
    my, mx = int(margin * (ys.max() - ys.min() + 1)), int(margin * (xs.max() - xs.min() + 1))
    return slice(max(0, ys.min() - my), ys.max() + 1 + my), slice(max(0, xs.min() - mx), xs.max() + 1 + mx)


def evaluate_heldout(
    dataset: MultiViewDataset, render: Callable[[TrainingSample], np.ndarray], *, references: int, limit: int | None = None
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over the held-out views, inside each person's box.

    Args:
        render: a sample -> the rendered target view [S, S, 3] uint8.
        limit: at most this many views (spread evenly over the held-out set).
    """
    samples = list(dataset.heldout(references=references))
    if not samples:
        raise StudioError(f"{dataset.root}: no held-out views (generate with heldout_views > 0)")
    if limit is not None and len(samples) > limit:
        samples = [samples[int(i)] for i in np.linspace(0, len(samples) - 1, limit).round()]
    scores = []
    for sample in samples:
        rendered = render(sample).astype(np.float32) / 255.0
        truth = sample.target.image.astype(np.float32) / 255.0
        rows, cols = person_crop(truth, sample.target.mask)
        scores.append((psnr(rendered[rows, cols], truth[rows, cols]), ssim(rendered[rows, cols], truth[rows, cols])))
    values = np.array(scores)
    return {"psnr": float(values[:, 0].mean()), "ssim": float(values[:, 1].mean()), "views": float(len(samples))}


# --- the command lines of both train.py scripts -----------------------------------------------------


def add_generate_arguments(parser: Any) -> None:
    parser.add_argument("--photos", nargs="+", required=True, help="Photos of people (each becomes a textured avatar).")
    parser.add_argument("--motions", nargs="+", required=True, help="Motions (.npz, .bvh, or a video) that pose the avatars.")
    parser.add_argument("--output", required=True, help="Folder to write the dataset into.")
    parser.add_argument("--body", default="anny", help="Body model: anny, smplx or smpl (the released weights need smpl).")
    parser.add_argument("--size", type=int, default=256, help="Image side in pixels.")
    parser.add_argument("--views", type=int, default=8, help="Training cameras per subject.")
    parser.add_argument("--heldout-views", type=int, default=4, help="Evaluation cameras per subject.")
    parser.add_argument("--poses", type=int, default=8, help="Poses per subject.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the poses' random turns.")


def run_generate(args: Any, layout: str) -> Path:
    """``train.py generate``: fit the photos, load the motions, render and write the dataset."""
    from studio.body import load_body_model
    from studio.motion.loader import load_motion

    model = load_body_model(args.body)
    sources = [avatar_source(p, model) for p in args.photos]
    motions = [load_motion(m, model)[0] for m in args.motions]
    config = MultiViewConfig(size=args.size, views=args.views, heldout_views=args.heldout_views, poses=args.poses, seed=args.seed)
    return generate_multiview_data(args.output, sources, motions, body_model=model, layout=layout, config=config)


def add_train_arguments(parser: Any, *, sizes: Sequence[str]) -> None:
    parser.add_argument("--data", required=True, help="A dataset written by 'generate'.")
    parser.add_argument("--output", required=True, help="Folder to write the weights into.")
    parser.add_argument("--init", default=None, help="Weights folder to start from (released or studio-trained); default: random.")
    parser.add_argument("--model-size", default=sizes[-1], choices=list(sizes), help="Network size when starting from random weights.")
    parser.add_argument("--body", default="anny", help="Body model the dataset was posed with.")
    parser.add_argument("--steps", type=int, default=NerfTrainConfig.steps)
    parser.add_argument("--lr", type=float, default=NerfTrainConfig.learning_rate)
    parser.add_argument("--rays", type=int, default=NerfTrainConfig.rays)
    parser.add_argument("--references", type=int, default=1)
    parser.add_argument("--time-budget", type=float, default=None, help="Stop after this many seconds.")
    parser.add_argument("--save-every", type=int, default=NerfTrainConfig.save_every)
    parser.add_argument("--seed", type=int, default=0)


def train_config_from(args: Any) -> NerfTrainConfig:
    return NerfTrainConfig(
        steps=args.steps, learning_rate=args.lr, rays=args.rays, references=args.references, seed=args.seed, save_every=args.save_every,
        time_budget=args.time_budget,
    )  # fmt: skip


def script_main(argv: Sequence[str] | None, *, layout: str, description: str, train: Callable[[Any], Path], sizes: Sequence[str]) -> int:
    """The shared ``main`` of both train.py scripts: ``generate`` and ``train`` subcommands; errors
    are one line on stderr (exit status 1)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{layout}.train", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_arguments(sub.add_parser("generate", help=f"Render multi-view training data in {layout}'s layout."))
    add_train_arguments(sub.add_parser("train", help="Train on a generated dataset (accelerate launch for several GPUs)."), sizes=sizes)
    args = parser.parse_args(argv)
    try:
        out = run_generate(args, layout) if args.command == "generate" else train(args)
    except (StudioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
