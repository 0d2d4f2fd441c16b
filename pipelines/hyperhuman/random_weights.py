"""Randomly initialised components in the weights layouts, built from config in code: tiny ones for the
tests and the notebook (pictures from them are noise), full-size ones for the GPU benchmark.

Nothing here downloads anything. The full-size configurations are the published architectures:
SD-2-base's UNet, VAE and OpenCLIP ViT-H text encoder (HyperHuman's stage 1), SD 1.5's UNet and
CLIP ViT-L (the ControlNet path), SDXL-1.0 base's UNet and two text encoders (the refiner). The
tokenizer is a byte-level CLIP tokenizer with no merges (one token per byte), standing in for the
real vocabularies, which random networks cannot use anyway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

Size = Literal["tiny", "full"]

_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
UNET_CONFIGS = {
    # stabilityai/stable-diffusion-2-base unet/config.json (the fields that differ from diffusers' defaults)
    ("sd2", "full"): dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), down_block_types=_DOWN, up_block_types=_UP, layers_per_block=2,
                          attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True),
    # stable-diffusion-v1-5 unet/config.json
    ("sd15", "full"): dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), down_block_types=_DOWN, up_block_types=_UP, layers_per_block=2,
                           attention_head_dim=8, cross_attention_dim=768),
    # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    ("sdxl", "full"): dict(sample_size=128, block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=2, attention_head_dim=(5, 10, 20),
                           transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                           addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
    ("sd2", "tiny"): dict(sample_size=8, block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                          layers_per_block=1, attention_head_dim=(2, 4), cross_attention_dim=32, use_linear_projection=True, norm_num_groups=8),
    ("sd15", "tiny"): dict(sample_size=8, block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                           layers_per_block=1, attention_head_dim=4, cross_attention_dim=32, norm_num_groups=8),
    ("sdxl", "tiny"): dict(sample_size=8, block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                           layers_per_block=1, attention_head_dim=(2, 4), transformer_layers_per_block=(1, 1), cross_attention_dim=64, use_linear_projection=True,
                           addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8),
}  # fmt: skip
VAE_CONFIGS = {
    "full": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512),
    "tiny": dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, sample_size=64),
}
TEXT_CONFIGS = {
    # OpenCLIP ViT-H as SD-2 ships it (23 of its 24 layers), CLIP ViT-L/14, OpenCLIP ViT-bigG (SDXL's second)
    ("openclip_h", "full"): dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, hidden_act="gelu", projection_dim=512),
    ("clip_l", "full"): dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768),
    ("openclip_g", "full"): dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu", projection_dim=1280),
    ("openclip_h", "tiny"): dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
    ("clip_l", "tiny"): dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
    ("openclip_g", "tiny"): dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32),
}  # fmt: skip


def unet(kind: Literal["sd2", "sd15", "sdxl"], size: Size = "tiny", *, seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIGS[(kind, size)])


def vae(size: Size = "tiny", *, seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    blocks = len(VAE_CONFIGS[size]["block_out_channels"])
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        **VAE_CONFIGS[size],
    )


def text_encoder(
    kind: Literal["openclip_h", "clip_l", "openclip_g"], size: Size = "tiny", *, projection: bool = False, seed: int = 0
):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    # bos/eos/pad are the stand-in tokenizer's ids (the pooled output is read at the eos token)
    config = CLIPTextConfig(
        vocab_size=49408 if size == "full" else 1000,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **TEXT_CONFIGS[(kind, size)],
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def tokenizer():
    """A byte-level CLIP tokenizer without merges (ids below 514), 77 tokens long."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    chars = sorted(ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab.setdefault(c + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def randomize_zero_layers(module: torch.nn.Module, *, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised weights (ControlNet's zero convs, the skeleton's input channels, ...) small
    random values, so that every input of a random network visibly matters (tests would not see a
    miswired condition otherwise). Random initialisation gives no exact zeros, so only those change."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            zero = p == 0
            if name.endswith("weight") and zero.any():
                p[zero] = (torch.randn(p.shape, generator=generator) * std)[zero].to(p.dtype)
    return module


# --- HyperHuman -------------------------------------------------------------------------------------------


def sd_components(kind: Literal["sd2", "sd15"], size: Size = "tiny", *, seed: int = 0) -> dict:
    """SD-2-base's (what train.py's stage 1 starts from) or SD 1.5's components, random: unet, vae,
    text_encoder (OpenCLIP ViT-H or CLIP ViT-L), tokenizer, scheduler (DDIM or PNDM, SD's betas)."""
    from diffusers import DDIMScheduler, PNDMScheduler

    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    scheduler = (
        DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **betas)
        if kind == "sd2"
        else PNDMScheduler(skip_prk_steps=True, **betas)
    )
    return {
        "unet": unet(kind, size, seed=seed),
        "vae": vae(size, seed=seed),
        "text_encoder": text_encoder("openclip_h" if kind == "sd2" else "clip_l", size, seed=seed),
        "tokenizer": tokenizer(),
        "scheduler": scheduler,
    }


def hyperhuman_components(size: Size = "tiny", *, seed: int = 0) -> dict:
    """Stage 1's components: "unet" (a StructuralUNet around SD-2-base's architecture, its zero-started
    layers randomised), "vae", "text_encoder", "tokenizer"."""
    from .model import StructuralUNet

    components = sd_components("sd2", size, seed=seed)
    components["unet"] = randomize_zero_layers(StructuralUNet.from_base(components["unet"]), seed=seed)
    del components["scheduler"]  # the method's own (make_scheduler)
    return components


def sdxl_components(size: Size = "tiny", *, seed: int = 0) -> dict:
    """SDXL-1.0 base's components (random): unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler."""
    from diffusers import EulerDiscreteScheduler

    return {
        "unet": unet("sdxl", size, seed=seed),
        "vae": vae(size, seed=seed),
        "text_encoder": text_encoder("clip_l", size, seed=seed),
        "text_encoder_2": text_encoder("openclip_g", size, projection=True, seed=seed + 1),
        "tokenizer": tokenizer(),
        "tokenizer_2": tokenizer(),
        "scheduler": EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
        ),
    }


def quiet_saving() -> None:
    """No progress bars while writing weights."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def save_pipeline_folder(folder: Path, components: dict, class_name: str) -> Path:
    """Components saved as a diffusers pipeline folder (``model_index.json`` + one subfolder each)."""
    quiet_saving()
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": class_name, "_diffusers_version": "0.42.1"}
    for name, component in components.items():
        component.save_pretrained(folder / name)
        library = "transformers" if type(component).__module__.startswith("transformers") else "diffusers"
        index[name] = [library, type(component).__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_hyperhuman_weights(root: Path, size: Size = "tiny", *, refiner: bool = False, seed: int = 0) -> Path:
    """``root/hyperhuman/`` in the layout HyperHumanPipeline reads, with random networks; with
    ``refiner``, ``refiner/controlnet`` and ``refiner/base`` too. Returns ``root``."""
    from .model import StructureControlNet

    quiet_saving()
    folder = Path(root) / "hyperhuman"
    for name, component in hyperhuman_components(size, seed=seed).items():
        component.save_pretrained(folder / name)
    if refiner:
        xl = sdxl_components(size, seed=seed)
        save_pipeline_folder(folder / "refiner" / "base", xl, "StableDiffusionXLPipeline")
        control = randomize_zero_layers(StructureControlNet.from_unet(xl["unet"]), seed=seed)
        control.save_pretrained(folder / "refiner" / "controlnet")
    return Path(root)


def controlnet_models(base_unet, names=("openpose", "depth", "normal"), *, seed: int = 0) -> dict:
    """One ControlNet per name, copied from ``base_unet`` with its zero layers randomised."""
    from diffusers import ControlNetModel

    return {name: randomize_zero_layers(ControlNetModel.from_unet(base_unet), seed=seed + i) for i, name in enumerate(names)}


def write_controlnet_weights(
    root: Path, size: Size = "tiny", *, xl: bool = False, names=("openpose", "depth", "normal"), seed: int = 0
) -> Path:
    """``root/controlnet/`` in the layout ControlNetPipeline reads: an SD 1.5 (or SDXL) base folder and
    one ControlNet folder per name, all random. Returns ``root``."""
    folder = Path(root) / "controlnet"
    components = sdxl_components(size, seed=seed) if xl else sd_components("sd15", size, seed=seed)
    save_pipeline_folder(folder / "base", components, "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline")
    for name, net in controlnet_models(components["unet"], names, seed=seed).items():
        net.save_pretrained(folder / name)
    return Path(root)


__all__ = [
    "UNET_CONFIGS",
    "controlnet_models",
    "hyperhuman_components",
    "randomize_zero_layers",
    "save_pipeline_folder",
    "sd_components",
    "sdxl_components",
    "text_encoder",
    "tokenizer",
    "unet",
    "vae",
    "write_controlnet_weights",
    "write_hyperhuman_weights",
]
