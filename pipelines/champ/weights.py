"""Champ's released checkpoints: the folder layout, strict loading with one-line errors, and saving.

The layout is the official ``pretrained_models`` folder of the Champ release
(huggingface.co/fudan-generative-ai/champ), given as ``--weights DIR`` or ``$STUDIO_WEIGHTS``::

    DIR/
      champ/
        denoising_unet.pth            SD 1.5 UNet keys, no motion modules
        reference_unet.pth            the same without conv_norm_out / conv_out
        motion_module.pth             every ``...motion_modules...`` key, with the ``pos_encoder.pe`` buffers
        guidance_encoder_depth.pth
        guidance_encoder_normal.pth
        guidance_encoder_semantic_map.pth
        guidance_encoder_dwpose.pth
        model_config.json             optional: sizes of non-SD-1.5 models (written by train.py)
      image_encoder/                  CLIP ViT-L/14 vision model with projection (transformers format)
      sd-vae-ft-mse/                  Stable Diffusion's fine-tuned VAE (diffusers format)

A ``.safetensors`` file with the same stem is used in place of a ``.pth`` when present. ``.pth`` files
are read with ``torch.load(weights_only=True)``. ``DIR/champ/champ/...`` (a weights root holding
several pipelines' folders) is accepted too. No key is renamed: our modules use the official names.
Loading is strict, with one exception: guidance-encoder files saved by Champ's training scripts also
hold the tensors of ``guidance_attention``, a transformer block the encoder's forward pass never uses
(the released files lack it); exactly those tensors are dropped, with one logged line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from studio.checkpoints import check_state
from studio.errors import StudioError

from .config import GUIDANCE_TYPES, ChampModelConfig

SOURCE = "the Champ release, huggingface.co/fudan-generative-ai/champ"
# Where each folder of the layout comes from (the Champ release bundles all three).
FOLDER_SOURCES = {
    "champ": SOURCE,
    "image_encoder": "the Champ release or huggingface.co/lambdalabs/sd-image-variations-diffusers (image_encoder/)",
    "sd-vae-ft-mse": "the Champ release or huggingface.co/stabilityai/sd-vae-ft-mse",
}
CHECKPOINTS = ("denoising_unet", "reference_unet", "motion_module", *(f"guidance_encoder_{g}" for g in GUIDANCE_TYPES))
SUBFOLDERS = {"image_encoder": "image_encoder", "vae": "sd-vae-ft-mse"}
CONFIG_FILE = "model_config.json"
# The unused block in guidance encoders saved by Champ's training scripts (see the module docstring).
UNUSED_GUIDANCE_BLOCK = "guidance_attention"

logger = logging.getLogger(__name__)


def find_root(weights: Path) -> Path:
    """The folder holding ``champ/``: ``weights`` itself or ``weights/champ`` (a multi-pipeline root)."""
    nested = weights / "champ"
    if not any(checkpoint_file(weights / "champ", name) for name in CHECKPOINTS) and (nested / "champ").is_dir():
        return nested
    return weights


def checkpoint_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.safetensors``, else ``folder/stem.pth``, else None."""
    for suffix in (".safetensors", ".pth"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def missing_files(weights: Path) -> list[str]:
    """What the layout lacks, as paths relative to the root (empty when complete)."""
    root = find_root(weights)
    missing = [f"champ/{name}.pth" for name in CHECKPOINTS if checkpoint_file(root / "champ", name) is None]
    missing += [f"{sub}/config.json" for sub in SUBFOLDERS.values() if not (root / sub / "config.json").is_file()]
    return missing


def weights_status(weights: Path | None) -> tuple[bool, str]:
    """(ok, message) without loading anything."""
    if weights is None:
        return False, f"no weights folder (give --weights DIR or set STUDIO_WEIGHTS to the folder with Champ's files from {SOURCE})"
    if not weights.is_dir():
        return False, f"{weights}: no such folder"
    missing = missing_files(weights)
    if missing:
        folders = dict.fromkeys(m.split("/")[0] for m in missing)
        sources = "; ".join(f"{f}/ from {FOLDER_SOURCES[f]}" for f in folders)
        return False, f"{weights} lacks {', '.join(missing)} ({sources}; the README's Champ section shows the layout)"
    return True, f"all files found in {find_root(weights)}"


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from .safetensors or .pth (``weights_only=True``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise StudioError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StudioError(f"{path}: expected a state dict of tensors")
    return state


def load_module(module: nn.Module, files: dict[Path, dict[str, torch.Tensor]], *, key_filter=None) -> None:
    """Load ``module`` strictly from one or more files; each file must hold exactly its share of keys.

    Args:
        files: path -> its state dict; with several, ``key_filter(path, key)`` says which file owns a key.
    """
    expected = {k: v.shape for k, v in module.state_dict().items()}
    merged: dict[str, torch.Tensor] = {}
    for path, state in files.items():
        share = {k: s for k, s in expected.items() if key_filter is None or key_filter(path, k)}
        check_state(share, state, path)
        merged.update(state)
    module.load_state_dict(merged, strict=True, assign=True)


def model_config(root: Path) -> ChampModelConfig:
    path = root / "champ" / CONFIG_FILE
    if not path.is_file():
        return ChampModelConfig()
    try:
        return ChampModelConfig.from_json(path.read_text())
    except Exception as exc:
        raise StudioError(f"{path}: not a valid Champ model config ({exc})") from exc


def checkpoint_path(root: Path, stem: str) -> Path:
    path = checkpoint_file(root / "champ", stem)
    if path is None:
        raise StudioError(f"{root / 'champ' / (stem + '.pth')}: missing (from {SOURCE})")
    return path


def load_champ_files(root: Path, reference_unet: nn.Module, denoising_unet: nn.Module, guidance_encoders: dict[str, nn.Module]) -> None:
    """Load ``root/champ/`` strictly into the networks; motion_module.pth only if the UNet has motion modules."""
    path = checkpoint_path(root, "reference_unet")
    load_module(reference_unet, {path: read_checkpoint(path)})
    unet_file = checkpoint_path(root, "denoising_unet")
    files = {unet_file: read_checkpoint(unet_file)}
    motion_file = None
    if denoising_unet.motion_config is not None:
        motion_file = checkpoint_path(root, "motion_module")
        files[motion_file] = read_checkpoint(motion_file)
    load_module(denoising_unet.unet, files, key_filter=lambda path, key: ("motion_modules" in key) == (path == motion_file))
    for g, encoder in guidance_encoders.items():
        path = checkpoint_path(root, f"guidance_encoder_{g}")
        load_module(encoder, {path: drop_unused_guidance_block(read_checkpoint(path), encoder, path)})


def drop_unused_guidance_block(state: dict[str, torch.Tensor], encoder: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """``state`` without the ``guidance_attention.*`` tensors of a training-script checkpoint.

    Only that block's own key names are dropped (it has the last transformer block's layout, so the
    names are those of ``encoder.attentions[-1]``); any other extra tensor stays, for the strict check.
    """
    unused = {f"{UNUSED_GUIDANCE_BLOCK}.{key}" for key in encoder.attentions[-1].state_dict()}
    dropped = unused & state.keys()
    if not dropped:
        return state
    logger.info("%s: ignoring %d unused %s.* tensors (saved by Champ's training scripts)", path, len(dropped), UNUSED_GUIDANCE_BLOCK)
    return {k: v for k, v in state.items() if k not in dropped}


def save_checkpoints(folder: Path, modules: dict[str, nn.Module], config: ChampModelConfig) -> None:
    """Write ``folder/champ/`` in the official layout as .safetensors (what ``from_pretrained`` reads).

    Args:
        modules: "denoising_unet" (a VideoUNet), "reference_unet", and "guidance_encoder_<type>" entries.
    """
    from safetensors.torch import save_file

    from studio.media import atomic_path

    out = folder / "champ"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in modules.items():
        if name == "denoising_unet":
            state = module.unet.state_dict()
            files["denoising_unet"] = {k: v for k, v in state.items() if "motion_modules" not in k}
            motion = {k: v for k, v in state.items() if "motion_modules" in k}
            if motion:
                files["motion_module"] = motion
        else:
            files[name] = module.state_dict()
    for name, state in files.items():
        with atomic_path(out / f"{name}.safetensors") as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
    with atomic_path(out / CONFIG_FILE) as tmp:
        tmp.write_text(config.to_json())
