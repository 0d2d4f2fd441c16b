"""What the image pipelines feed their networks: studio's rendered structure maps as tensors, prompt
embeddings (SD and SDXL), and VAE round trips.

Maps follow studio's conventions (``studio.render``): skeleton OpenPose-style RGB on black; depth grey,
near bright, background 0; normal camera-space OpenGL axes (x right, y up, z to the viewer) as
``(n + 1) / 2 * 255``, background 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

STRUCTURE_MAPS = ("skeleton", "depth", "normal")


def render_structure(pose, body_model, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The skeleton, depth and normal maps of a one-frame HumanCondition seen at ``size``.

    Returns:
        skeleton [H, W, 3], depth [H, W], normal [H, W, 3], all uint8.
    """
    if tuple(pose.camera.image_size) != tuple(size):
        pose = dataclasses.replace(pose, camera=pose.camera.resized(tuple(size)))
    maps = pose.render(STRUCTURE_MAPS, body_model=body_model)
    return {name: maps[name][0] for name in STRUCTURE_MAPS}


def resize_map(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 map resized to (height, width): area when shrinking, linear when growing."""
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image.copy()
    shrink = image.shape[0] > h
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_pixels(image: np.ndarray) -> torch.Tensor:
    """A uint8 image [H, W, 3] (or grey [H, W], repeated to RGB) as [1, 3, H, W] float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(image)).float()
    x = x[..., None].expand(*x.shape, 3) if x.ndim == 2 else x
    return (x.permute(2, 0, 1)[None] / 127.5 - 1.0).contiguous()


def from_pixels(x: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W, 3] uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def structure_tensor(maps: dict[str, np.ndarray], conditions: dict[str, int]) -> torch.Tensor:
    """The refiner's condition input: the maps in ``conditions`` order, concatenated, in [0, 1].

    Args:
        maps: name -> uint8 [H, W] or [H, W, 3]; a missing name is a dropped (zero) condition.
        conditions: name -> channels (1: grey, 3: RGB).
    Returns:
        [1, sum of channels, H, W] float32.
    """
    shape = next(m.shape[:2] for m in maps.values())
    planes = []
    for name, channels in conditions.items():
        m = maps.get(name)
        m = np.zeros((*shape, channels), np.uint8) if m is None else m
        m = m[..., None] if m.ndim == 2 else m
        if m.shape[2] != channels:
            m = m.mean(axis=2, keepdims=True).astype(np.uint8) if channels == 1 else np.repeat(m[..., :1], channels, axis=2)
        planes.append(torch.from_numpy(np.ascontiguousarray(m)).float().permute(2, 0, 1) / 255.0)
    return torch.cat(planes)[None]


def depth_from_pixels(rgb: np.ndarray) -> np.ndarray:
    """A decoded depth image [H, W, 3] uint8 as studio's grey depth map [H, W] uint8 (channel mean)."""
    return rgb.astype(np.float32).mean(axis=2).round().astype(np.uint8)


def bae_normal(normal: np.ndarray) -> np.ndarray:
    """studio's normal map in the colours ControlNet's normal-BAE model reads (ScanNet's: blue to the
    viewer, red to the image's left, green up): the red channel mirrored on the body, background 0.

    Args:
        normal: [H, W, 3] uint8 in studio's encoding (red = x to the right).
    """
    out = normal.copy()
    body = normal.any(axis=2)
    out[..., 0] = np.where(body, 255 - normal[..., 0], 0)
    return out


# --- prompts -----------------------------------------------------------------------------------------


def _token_ids(tokenizer, prompts: Sequence[str], device) -> torch.Tensor:
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return ids.to(device)


def encode_prompt(tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
    """SD 1.x/2.x text tokens: the text encoder's last hidden state, [B, L, D]."""
    device = next(text_encoder.parameters()).device
    return text_encoder(_token_ids(tokenizer, prompts, device))[0]


def encode_prompt_xl(tokenizers: Sequence, text_encoders: Sequence, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL text tokens and pooled embedding: both encoders' penultimate hidden states concatenated
    ([B, L, D1 + D2]) and the second encoder's projected pooled output ([B, P])."""
    hidden, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders):
        device = next(encoder.parameters()).device
        out = encoder(_token_ids(tokenizer, prompts, device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]  # the last encoder's (CLIPTextModelWithProjection) text_embeds
    return torch.cat(hidden, dim=-1), pooled


# --- VAE -----------------------------------------------------------------------------------------------


def vae_encode(vae, pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> scaled latents [B, C, H/8, W/8] (the posterior mean)."""
    param = next(vae.parameters())
    latents = vae.encode(pixels.to(param.device, param.dtype)).latent_dist.mean
    return latents * vae.config.scaling_factor


def vae_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents [B, C, h, w] -> pixels [B, 3, 8h, 8w] in [-1, 1] (float32, on the CPU)."""
    param = next(vae.parameters())
    return vae.decode(latents.to(param.device, param.dtype) / vae.config.scaling_factor).sample.float().cpu()


__all__ = [
    "STRUCTURE_MAPS",
    "bae_normal",
    "depth_from_pixels",
    "encode_prompt",
    "encode_prompt_xl",
    "from_pixels",
    "render_structure",
    "resize_map",
    "structure_tensor",
    "to_pixels",
    "vae_decode",
    "vae_encode",
]
