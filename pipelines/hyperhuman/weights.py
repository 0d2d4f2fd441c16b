"""Where the two image pipelines of this package look for weights, and loading them quietly.

Both read local diffusers folders only (``from_pretrained(..., local_files_only=True)``; safetensors, or
``.bin`` files that diffusers and transformers read with ``torch.load(weights_only=True)``). The folder
is ``--weights DIR`` or ``$STUDIO_WEIGHTS``; each pipeline has its own subfolder there (``DIR/hyperhuman``,
``DIR/controlnet``), or ``DIR`` may be that subfolder itself.

HyperHuman (no released weights: train them with ``pipelines/hyperhuman/train.py``)::

    DIR/hyperhuman/
      unet/          config.json + diffusion_pytorch_model.safetensors   StructuralUNet (train.py --stage 1)
      vae/           from stabilityai/stable-diffusion-2-base             (train.py links it)
      text_encoder/  from stabilityai/stable-diffusion-2-base (OpenCLIP ViT-H)
      tokenizer/     from stabilityai/stable-diffusion-2-base
      refiner/       optional, the Structure-Guided Refiner:
        controlnet/  config.json + diffusion_pytorch_model.safetensors   StructureControlNet (train.py --stage refiner)
        base/        stabilityai/stable-diffusion-xl-base-1.0, a diffusers pipeline folder (train.py links it)

ControlNet path (public weights)::

    DIR/controlnet/
      base/      a diffusers pipeline folder: stable-diffusion-v1-5/stable-diffusion-v1-5, or
                 stabilityai/stable-diffusion-xl-base-1.0 (then text_encoder_2/ and tokenizer_2/ too)
      openpose/  a ControlNet folder (config.json + diffusion_pytorch_model.safetensors): SD 1.5
                 lllyasviel/control_v11p_sd15_openpose; SDXL thibaud/controlnet-openpose-sdxl-1.0
      depth/     SD 1.5 lllyasviel/control_v11f1p_sd15_depth; SDXL diffusers/controlnet-depth-sdxl-1.0
      normal/    SD 1.5 lllyasviel/control_v11p_sd15_normalbae (no SDXL normal ControlNet is assumed)

At least one of openpose/, depth/ and normal/ is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from studio.errors import StudioError

logger = logging.getLogger(__name__)

SD2_SOURCE = "stabilityai/stable-diffusion-2-base"
SDXL_SOURCE = "stabilityai/stable-diffusion-xl-base-1.0"
TRAIN_SCRIPT = "pipelines/hyperhuman/train.py"
HYPERHUMAN_SOURCE = f"no released weights: train them with {TRAIN_SCRIPT} from {SD2_SOURCE} (README, HyperHuman section)"

# Each requirement: (alternative paths, any one of which will do, relative to the pipeline folder; source).
Requirement = tuple[tuple[str, ...], str]

MODEL_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
TEXT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def _files(folder: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{folder}/{n}" for n in names)


def _model(folder: str, source: str, names: tuple[str, ...] = MODEL_FILES) -> list[Requirement]:
    return [((f"{folder}/config.json",), source), (_files(folder, names), source)]


HYPERHUMAN_FILES: list[Requirement] = [
    *_model("unet", f"{TRAIN_SCRIPT} --stage 1"),
    *_model("vae", f"{SD2_SOURCE} (vae/)"),
    *_model("text_encoder", f"{SD2_SOURCE} (text_encoder/)", TEXT_FILES),
    (_files("tokenizer", TOKENIZER_FILES), f"{SD2_SOURCE} (tokenizer/)"),
]
SDXL_FILES: list[Requirement] = [
    (("model_index.json",), SDXL_SOURCE),
    *_model("unet", f"{SDXL_SOURCE} (unet/)"),
    *_model("vae", f"{SDXL_SOURCE} (vae/)"),
    *_model("text_encoder", f"{SDXL_SOURCE} (text_encoder/)", TEXT_FILES),
    *_model("text_encoder_2", f"{SDXL_SOURCE} (text_encoder_2/)", TEXT_FILES),
    (_files("tokenizer", TOKENIZER_FILES), f"{SDXL_SOURCE} (tokenizer/)"),
    (_files("tokenizer_2", TOKENIZER_FILES), f"{SDXL_SOURCE} (tokenizer_2/)"),
]
REFINER_FILES: list[Requirement] = [
    *_model("refiner/controlnet", f"{TRAIN_SCRIPT} --stage refiner"),
    *[(tuple(f"refiner/base/{p}" for p in paths), source) for paths, source in SDXL_FILES],
]

CONTROLNET_SOURCES = {
    "openpose": "lllyasviel/control_v11p_sd15_openpose (SD 1.5) or thibaud/controlnet-openpose-sdxl-1.0 (SDXL)",
    "depth": "lllyasviel/control_v11f1p_sd15_depth (SD 1.5) or diffusers/controlnet-depth-sdxl-1.0 (SDXL)",
    "normal": "lllyasviel/control_v11p_sd15_normalbae (SD 1.5)",
}
BASE_SOURCE = "stable-diffusion-v1-5/stable-diffusion-v1-5 or stabilityai/stable-diffusion-xl-base-1.0"
CONTROLNET_BASE_FILES: list[Requirement] = [
    (("base/model_index.json",), BASE_SOURCE),
    *_model("base/unet", f"{BASE_SOURCE} (unet/)"),
    *_model("base/vae", f"{BASE_SOURCE} (vae/)"),
    *_model("base/text_encoder", f"{BASE_SOURCE} (text_encoder/)", TEXT_FILES),
    (_files("base/tokenizer", TOKENIZER_FILES), f"{BASE_SOURCE} (tokenizer/)"),
]


def pipeline_folder(weights: Path, name: str, marker: str) -> Path:
    """``weights/name`` when it exists, else ``weights`` itself when it holds ``marker`` (the pipeline's own
    folder given directly), else ``weights/name`` (for the messages)."""
    nested = weights / name
    if nested.is_dir() or not (weights / marker).exists():
        return nested
    return weights


def missing(folder: Path, requirements: list[Requirement]) -> list[Requirement]:
    """The requirements with none of their alternatives present under ``folder``."""
    return [(paths, source) for paths, source in requirements if not any((folder / p).is_file() for p in paths)]


def describe_missing(folder: Path, lacking: list[Requirement]) -> str:
    """One line naming each missing file (its first alternative) and, once per source, where it comes from."""
    files = ", ".join(paths[0] for paths, _ in lacking)
    sources = "; ".join(dict.fromkeys(source for _, source in lacking))
    return f"{folder} lacks {files} (from {sources})"


def locate(weights: Path | None, name: str, marker: str, layout: str) -> tuple[Path | None, str]:
    """(the pipeline's folder, "") or (None, why not): no weights folder given, or no such folder."""
    if weights is None:
        return None, f"no weights folder: give --weights DIR or set STUDIO_WEIGHTS; {name} reads {layout}"
    if not weights.is_dir():
        return None, f"{weights}: no such folder"
    return pipeline_folder(weights, name, marker), ""


def hyperhuman_status(weights: Path | None) -> tuple[bool, str]:
    """(ok, message) for HyperHuman, without loading anything."""
    layout = f"DIR/hyperhuman/ with unet/, vae/, text_encoder/, tokenizer/ ({HYPERHUMAN_SOURCE})"
    folder, why = locate(weights, "hyperhuman", "unet/config.json", layout)
    if folder is None:
        return False, why
    lacking = missing(folder, HYPERHUMAN_FILES)
    if lacking:
        return False, describe_missing(folder, lacking)
    refiner = missing(folder, REFINER_FILES)
    if not refiner:
        return True, f"stage 1 and the refiner found in {folder}"
    if len(refiner) == len(REFINER_FILES):
        return True, f"stage 1 found in {folder} (no refiner/: stage 1 only)"
    return True, f"stage 1 found in {folder}; the refiner is incomplete and will not run: {describe_missing(folder, refiner)}"


def controlnet_names(folder: Path) -> list[str]:
    """The condition ControlNets present in ``folder`` (openpose, depth, normal)."""
    return [name for name in CONTROLNET_SOURCES if not missing(folder, _model(name, ""))]


def controlnet_status(weights: Path | None) -> tuple[bool, str]:
    """(ok, message) for the ControlNet path, without loading anything."""
    layout = f"DIR/controlnet/ with base/ ({BASE_SOURCE}) and openpose/, depth/ and/or normal/ ControlNet folders"
    folder, why = locate(weights, "controlnet", "base/model_index.json", layout)
    if folder is None:
        return False, why
    lacking = missing(folder, CONTROLNET_BASE_FILES)
    found = controlnet_names(folder)
    if not found:
        lacking += [((f"{name}/config.json",), CONTROLNET_SOURCES[name]) for name in CONTROLNET_SOURCES]
    if lacking:
        return False, describe_missing(folder, lacking) + " (at least one of openpose/, depth/, normal/)" * (not found)
    kind = "SDXL" if (folder / "base" / "text_encoder_2").is_dir() else "SD 1.5-style"
    return True, f"{kind} base and the {', '.join(found)} ControlNet(s) found in {folder}"


def load_pretrained(cls, folder: Path, source: str, **kwargs):
    """A diffusers or transformers component from a local folder, quietly (no download, no progress
    bars); any failure is one line naming the folder and where it comes from."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        return cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". If you want to instead")[0]  # diffusers' advice on overwriting weights does not apply
        raise StudioError(f"{folder}: cannot load {cls.__name__} ({first}); it comes from {source}") from exc


__all__ = [
    "CONTROLNET_SOURCES",
    "HYPERHUMAN_FILES",
    "REFINER_FILES",
    "controlnet_names",
    "controlnet_status",
    "hyperhuman_status",
    "load_pretrained",
    "missing",
    "pipeline_folder",
]
