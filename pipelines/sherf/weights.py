"""SHERF's weights: the released pickles, read safely, and studio-trained safetensors.

Layout of ``--weights DIR`` (or ``$STUDIO_WEIGHTS``), ``DIR/sherf/...`` working too::

    DIR/
      SHERF_RenderPeople.pkl   any of the four released files (github.com/skhu101/SHERF: THuman,
      SHERF_THuman.pkl         HuMMan, zju_mocap, RenderPeople), unmodified
      ...
      sherf.safetensors        or weights written by ``python -m pipelines.sherf.train``
      model_config.json        (their sizes and body model)

A released file is a plain pickle of ``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}``
holding whole modules, some carrying their own source text. It is read with studio's restricted
unpickler (``studio.nerf.load_pickle``): the source text is never run, classes become inert
stand-ins, storages land on the CPU, and only ``G``'s tensors are kept (the official evaluation
renders with ``G``). Loading is strict: every tensor of the official tree, with its shape.
"""

from __future__ import annotations

import logging
from pathlib import Path

from studio.errors import StudioError
from studio.checkpoints import check_state
from studio.nerf import load_pickle, load_strict, module_state, read_model_config, read_safetensors, save_safetensors

from .model import SherfGenerator, SherfModelConfig

SOURCE = "the SHERF release (github.com/skhu101/SHERF; S-Lab License 1.0, non-commercial)"
DATASETS = ("RenderPeople", "THuman", "HuMMan", "zju_mocap")
STUDIO_FILE = "sherf.safetensors"
CONFIG_FILE = "model_config.json"

logger = logging.getLogger(__name__)


def find_folder(root: Path) -> Path:
    """``root/sherf`` when it holds SHERF's files, else ``root``."""
    nested = root / "sherf"
    if nested.is_dir() and (any(nested.glob("*.pkl")) or (nested / STUDIO_FILE).is_file()):
        return nested
    return root


def find_checkpoint(root: Path, dataset: str = "auto") -> Path | None:
    """The file to load: studio's safetensors, else the released pickle of ``dataset`` ("auto": the
    first of RenderPeople, THuman, HuMMan, zju_mocap found, else the only .pkl there)."""
    folder = find_folder(root)
    if (folder / STUDIO_FILE).is_file():
        return folder / STUDIO_FILE
    names = DATASETS if dataset == "auto" else (dataset,)
    for name in names:
        if (folder / f"SHERF_{name}.pkl").is_file():
            return folder / f"SHERF_{name}.pkl"
    if dataset == "auto":
        pickles = sorted(folder.glob("*.pkl"))
        if len(pickles) == 1:
            return pickles[0]
    return None


def weights_status(root: Path | None, dataset: str = "auto") -> tuple[bool, str]:
    """(found, where it looked) without loading anything."""
    if root is None:
        return False, f"no weights folder (give --weights DIR or set STUDIO_WEIGHTS to a folder with SHERF_RenderPeople.pkl etc. from {SOURCE})"
    if not root.is_dir():
        return False, f"{root}: no such folder"
    path = find_checkpoint(root, dataset)
    if path is None:
        wanted = "SHERF_<RenderPeople|THuman|HuMMan|zju_mocap>.pkl" if dataset == "auto" else f"SHERF_{dataset}.pkl"
        return False, f"{find_folder(root)} lacks {wanted} (from {SOURCE}) or {STUDIO_FILE} (from pipelines.sherf.train)"
    return True, f"found {path}"


def model_config(path: Path) -> SherfModelConfig:
    """The sizes of a checkpoint: the released ones, or the ``model_config.json`` beside it."""
    return read_model_config(path, SherfModelConfig, config_file=CONFIG_FILE, studio_file=STUDIO_FILE, script="pipelines.sherf.train")


def body_model_for(root: Path | None, dataset: str = "auto") -> str:
    """The body model the weights in ``root`` need (the released ones: smpl), reading only small files."""
    path = find_checkpoint(root, dataset) if root is not None and root.is_dir() else None
    return model_config(path).body_model if path is not None else SherfModelConfig().body_model


def read_official_state(path: Path) -> dict:
    """``G``'s tensors from a released pickle (restricted unpickling; nothing in the file runs)."""
    container = load_pickle(path, source=SOURCE)
    if not isinstance(container, dict) or "G" not in container:
        raise StudioError(f"{path}: no 'G' module (expected a SHERF network pickle with G, D and G_ema)")
    try:
        return module_state(container["G"])
    except StudioError as exc:
        raise StudioError(f"{path}: {exc}") from None


def load_generator(root: Path, dataset: str = "auto") -> tuple[SherfGenerator, Path]:
    """Build SHERF's generator and load it strictly: (generator, the file read)."""
    import torch

    path = find_checkpoint(root, dataset)
    if path is None:
        raise StudioError(f"sherf: {weights_status(root, dataset)[1]}")
    config = model_config(path)
    with torch.device("meta"):
        generator = SherfGenerator(config)
    if path.suffix == ".safetensors":
        state, _ = read_safetensors(path)
        source = str(path)
    else:
        state = read_official_state(path)
        source = f"{path} (G)"
    load_strict(generator, state, source)
    logger.info("sherf: loaded %s", path)
    return generator, path


def save_generator(folder: Path, generator: SherfGenerator) -> Path:
    """Write studio's checkpoint (``sherf.safetensors`` with the official key names, and
    ``model_config.json``) into ``folder``; ``load_generator`` reads it back."""
    from studio.outputs import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    state = generator.state_dict()
    check_state({k: v.shape for k, v in state.items()}, state, folder)
    path = save_safetensors(folder / STUDIO_FILE, state)
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(generator.config.to_json())
    return path
