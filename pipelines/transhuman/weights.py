"""TransHuman's weights: the released ``2100.pth``, read safely, and studio-trained safetensors.

Layout of ``--weights DIR`` (or ``$STUDIO_WEIGHTS``), ``DIR/transhuman/...`` working too::

    DIR/
      2100.pth                 the release (data/trained_model/transhuman/official/2100.pth), unmodified
      kmeans_dict_300.npy      optional: the official clustering of the SMPL template (the official
                               repository's kmeans_dict/); without it studio clusters the template itself
      transhuman.safetensors   or weights written by ``python -m pipelines.transhuman.train``,
      model_config.json        with their sizes and body model,
      clusters.npy             and their clustering (int64 [V])

``2100.pth`` is a ``torch.save`` archive of ``{'net', 'optim', 'scheduler', 'recorder', 'epoch'}``
whose scheduler is a custom object, so ``torch.load(weights_only=True)`` refuses it. studio reads the
archive with its restricted unpickler (``studio.nerf.read_torch_zip``: tensors rebuilt on the CPU,
other objects inert, code-running globals refused) and keeps ``net`` only, loaded strictly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from studio.errors import StudioError
from studio.nerf import load_npy_object, load_strict, read_model_config, read_safetensors, read_torch_zip, save_safetensors

from .model import TransHumanModelConfig, TransHumanNet

SOURCE = "the TransHuman release (github.com/pansanity666/TransHuman; UNC research-only licence, non-commercial)"
OFFICIAL_FILE = "2100.pth"
KMEANS_FILE = "kmeans_dict_{k}.npy"
STUDIO_FILE = "transhuman.safetensors"
CONFIG_FILE = "model_config.json"
CLUSTERS_FILE = "clusters.npy"

logger = logging.getLogger(__name__)


def find_folder(root: Path) -> Path:
    nested = root / "transhuman"
    if nested.is_dir() and (any(nested.glob("*.pth")) or (nested / STUDIO_FILE).is_file()):
        return nested
    return root


def find_checkpoint(root: Path) -> Path | None:
    """studio's safetensors, else ``2100.pth``, else the only .pth there."""
    folder = find_folder(root)
    for name in (STUDIO_FILE, OFFICIAL_FILE):
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.pth"))
    return found[0] if len(found) == 1 else None


def weights_status(root: Path | None) -> tuple[bool, str]:
    if root is None:
        return False, f"no weights folder (give --weights DIR or set STUDIO_WEIGHTS to a folder with {OFFICIAL_FILE} from {SOURCE})"
    if not root.is_dir():
        return False, f"{root}: no such folder"
    path = find_checkpoint(root)
    if path is None:
        return False, f"{find_folder(root)} lacks {OFFICIAL_FILE} (from {SOURCE}) or {STUDIO_FILE} (from pipelines.transhuman.train)"
    return True, f"found {path}"


def model_config(path: Path) -> TransHumanModelConfig:
    """The sizes of a checkpoint: the released ones, or the ``model_config.json`` beside it."""
    return read_model_config(path, TransHumanModelConfig, config_file=CONFIG_FILE, studio_file=STUDIO_FILE, script="pipelines.transhuman.train")


def body_model_for(root: Path | None) -> str:
    """The body model the weights in ``root`` need, reading only small files."""
    path = find_checkpoint(root) if root is not None and root.is_dir() else None
    return model_config(path).body_model if path is not None else TransHumanModelConfig().body_model


def read_official_state(path: Path) -> dict[str, torch.Tensor]:
    """``net`` of a released archive (restricted unpickling; the scheduler and optimiser are never built)."""
    container = read_torch_zip(path, source=SOURCE)
    if not isinstance(container, dict) or "net" not in container:
        raise StudioError(f"{path}: no 'net' entry (expected TransHuman's checkpoint with net, optim, scheduler)")
    state = container["net"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StudioError(f"{path}: 'net' is not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_net(root: Path) -> tuple[TransHumanNet, Path]:
    """Build TransHuman's network and load it strictly: (network, the file read)."""
    path = find_checkpoint(root)
    if path is None:
        raise StudioError(f"transhuman: {weights_status(root)[1]}")
    config = model_config(path)
    with torch.device("meta"):
        net = TransHumanNet(config)
    state = read_safetensors(path)[0] if path.suffix == ".safetensors" else read_official_state(path)
    load_strict(net, state, f"{path} (net)" if path.suffix == ".pth" else path)
    # Buffers that are not in the state dict (the view embedder's) were built on the meta device.
    net.view_embedder = type(net.view_embedder)(4, persistent=False)
    logger.info("transhuman: loaded %s", path)
    return net, path


def read_clusters(root: Path, num_vertices: int, num_clusters: int) -> torch.Tensor | None:
    """The template clustering that goes with the weights: studio's ``clusters.npy``, or the
    official ``kmeans_dict_<k>.npy`` (a pickled dict, read with the restricted unpickler); None when
    neither is there. Labels [V] long in 0..k-1."""
    folder = find_folder(root)
    if (folder / CLUSTERS_FILE).is_file():
        labels = np.load(folder / CLUSTERS_FILE, allow_pickle=False)
        source = folder / CLUSTERS_FILE
    elif (folder / KMEANS_FILE.format(k=num_clusters)).is_file():
        source = folder / KMEANS_FILE.format(k=num_clusters)
        data = load_npy_object(source, source=SOURCE)
        data = data.item() if isinstance(data, np.ndarray) and data.dtype == object else data
        if not isinstance(data, dict) or not data:
            raise StudioError(f"{source}: expected a dict with the vertices' cluster labels")
        labels = np.asarray(next(iter(data.values())))
    else:
        return None
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != num_vertices or not np.issubdtype(labels.dtype, np.integer):
        raise StudioError(f"{source}: expected {num_vertices} integer cluster labels, got {labels.shape[0]} of {labels.dtype}")
    _, remapped = np.unique(labels, return_inverse=True)
    if remapped.max() + 1 != num_clusters:
        raise StudioError(f"{source}: {remapped.max() + 1} clusters, the network expects {num_clusters}")
    return torch.from_numpy(remapped.astype(np.int64))


def save_net(folder: Path, net: TransHumanNet, clusters: torch.Tensor) -> Path:
    """Write studio's checkpoint (official key names), its config and its clustering into ``folder``."""
    from studio.outputs import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    path = save_safetensors(folder / STUDIO_FILE, net.state_dict())
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(net.config.to_json())
    with atomic_path(folder / CLUSTERS_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, clusters.cpu().numpy().astype(np.int64), allow_pickle=False)
    return path
