"""HyperHuman's stage 2, the Structure-Guided Refiner, at sampling time: a frozen SDXL-1.0 base UNet
steered by ``StructureControlNet`` from the skeleton, depth and normal maps (stage 1's predictions, or
any maps), with the caption through SDXL's two text encoders. Sampling is DDIM with SDXL's own
noise schedule (epsilon prediction) and classifier-free guidance; the unconditional half gets SDXL's
zero text embedding (or a negative prompt's) and the same maps, as diffusers' ControlNet pipelines do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .conditioning import encode_prompt_xl, from_pixels, structure_tensor, vae_decode
from .weights import SDXL_SOURCE, TRAIN_SCRIPT, load_pretrained

if TYPE_CHECKING:
    from .model import StructureControlNet


def sdxl_time_ids(
    height: int, width: int, *, crop: tuple[int, int] = (0, 0), original: tuple[int, int] | None = None
) -> torch.Tensor:
    """SDXL's micro-conditioning [1, 6]: original size, crop top-left, target size (pixels)."""
    oh, ow = original or (height, width)
    return torch.tensor([[oh, ow, crop[0], crop[1], height, width]], dtype=torch.float32)


def device_and_dtype(device: str | torch.device | None, dtype: torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    """The defaults of every loader here: CUDA when available, else the CPU; float16 on CUDA, float32 on the CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return device, dtype or (torch.float16 if device.type == "cuda" else torch.float32)


def move_modules(modules: list[torch.nn.Module], device: torch.device, dtype: torch.dtype, *, float32: tuple = ()) -> None:
    """Move networks to ``device``; ``dtype`` for all but those in ``float32`` (VAEs stay float32)."""
    for module in modules:
        torch.nn.Module.to(module, device, dtype=torch.float32 if any(module is m for m in float32) else dtype)


def vae_factor(vae) -> int:
    """How many pixels one latent covers per side (8 for Stable Diffusion's VAEs)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def guide(prediction: torch.Tensor, scale: float, *, dim: int = 0) -> torch.Tensor:
    """Classifier-free guidance: the (unconditional, conditional) halves along ``dim`` combined."""
    uncond, cond = prediction.chunk(2, dim=dim)
    return uncond + scale * (cond - uncond)


class StructureGuidedRefiner:
    """Frozen SDXL base + the trainable structure ControlNet (see the module docstring)."""

    def __init__(self, *, unet, controlnet: StructureControlNet, vae, text_encoders: list, tokenizers: list, scheduler):
        self.unet, self.controlnet, self.vae = unet, controlnet, vae
        self.text_encoders, self.tokenizers = list(text_encoders), list(tokenizers)
        self.scheduler = scheduler
        self.device, self.dtype = torch.device("cpu"), torch.float32
        for module in self.modules():
            module.eval().requires_grad_(False)

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.controlnet, self.vae, *self.text_encoders]

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> StructureGuidedRefiner:
        """``folder`` holds ``controlnet/`` (train.py's StructureControlNet) and ``base/`` (SDXL-1.0 base)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        from .model import StructureControlNet

        folder = Path(folder)
        base = folder / "base"
        return cls(
            unet=load_pretrained(UNet2DConditionModel, base / "unet", SDXL_SOURCE),
            controlnet=load_pretrained(StructureControlNet, folder / "controlnet", f"{TRAIN_SCRIPT} --stage refiner"),
            vae=load_pretrained(AutoencoderKL, base / "vae", SDXL_SOURCE),
            text_encoders=[
                load_pretrained(CLIPTextModel, base / "text_encoder", SDXL_SOURCE),
                load_pretrained(CLIPTextModelWithProjection, base / "text_encoder_2", SDXL_SOURCE),
            ],
            tokenizers=[
                load_pretrained(CLIPTokenizer, base / "tokenizer", SDXL_SOURCE),
                load_pretrained(CLIPTokenizer, base / "tokenizer_2", SDXL_SOURCE),
            ],
            scheduler=ddim_from(scheduler_config(base / "scheduler")),
        )

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> StructureGuidedRefiner:
        self.device, self.dtype = torch.device(device), dtype or self.dtype
        move_modules(self.modules(), self.device, self.dtype, float32=(self.vae,))
        return self

    def text(self, prompt: str, negative_prompt: str | None, use_cfg: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens [1 or 2, L, D] and pooled embeddings [1 or 2, P], the unconditional half first."""
        tokens, pooled = encode_prompt_xl(self.tokenizers, self.text_encoders, [prompt])
        if not use_cfg:
            return tokens, pooled
        if negative_prompt:
            neg_tokens, neg_pooled = encode_prompt_xl(self.tokenizers, self.text_encoders, [negative_prompt])
        else:  # SDXL's unconditional embedding for an empty negative prompt: zeros
            neg_tokens, neg_pooled = torch.zeros_like(tokens), torch.zeros_like(pooled)
        return torch.cat([neg_tokens, tokens]), torch.cat([neg_pooled, pooled])

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        maps: dict[str, np.ndarray],
        *,
        negative_prompt: str | None = None,
        steps: int = 50,
        guidance_scale: float = 7.5,
        seed: int = 0,
        callback: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """An image from the structure maps.

        Args:
            maps: "skeleton" [H, W, 3], "depth" [H, W], "normal" [H, W, 3] uint8 at the output size
                (H, W multiples of the VAE's factor, 8); a missing map is a dropped (zero) condition.
            callback: called with the number of steps done.
        Returns:
            [H, W, 3] uint8.
        """
        height, width = next(iter(maps.values())).shape[:2]
        use_cfg = guidance_scale > 1.0
        batch = 2 if use_cfg else 1
        tokens, pooled = self.text(prompt, negative_prompt, use_cfg)
        tokens, pooled = tokens.to(self.device, self.dtype), pooled.to(self.device, self.dtype)
        added = {"text_embeds": pooled, "time_ids": sdxl_time_ids(height, width).expand(batch, -1).to(self.device, self.dtype)}
        condition = structure_tensor(maps, self.controlnet.conditions).to(self.device, self.dtype).expand(batch, -1, -1, -1)
        self.scheduler.set_timesteps(steps)
        channels = self.unet.config.in_channels
        generator = torch.Generator("cpu").manual_seed(seed)
        f = vae_factor(self.vae)
        latents = torch.randn((1, channels, height // f, width // f), generator=generator) * self.scheduler.init_noise_sigma
        for i, t in enumerate(self.scheduler.timesteps):
            x = self.scheduler.scale_model_input(latents.expand(batch, -1, -1, -1), t).to(self.device, self.dtype)
            down, mid = self.controlnet(x, t, tokens, maps=condition, added_cond_kwargs=added)
            noise = self.unet(
                x, t, tokens, added_cond_kwargs=added, down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
            )[0].float().cpu()  # fmt: skip
            noise = guide(noise, guidance_scale) if use_cfg else noise
            latents = self.scheduler.step(noise, t, latents).prev_sample
            if callback:
                callback(i + 1)
        return from_pixels(vae_decode(self.vae, latents))[0]


def scheduler_config(folder: Path) -> dict:
    """A pipeline's ``scheduler/scheduler_config.json`` as a dict ({} when there is none)."""
    import json

    path = Path(folder) / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def ddim_from(config: dict):
    """DDIM with another scheduler's noise schedule (SDXL's betas; its defaults when ``config`` is empty)."""
    from diffusers import DDIMScheduler

    settings = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    keep = (
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "prediction_type",
        "steps_offset",
        "timestep_spacing",
        "rescale_betas_zero_snr",
    )
    settings.update({k: config[k] for k in keep if k in config})
    return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **settings)


__all__ = [
    "StructureGuidedRefiner",
    "ddim_from",
    "device_and_dtype",
    "scheduler_config",
    "guide",
    "move_modules",
    "sdxl_time_ids",
    "vae_factor",
]
