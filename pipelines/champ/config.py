"""Sizes of Champ's networks (plain data, importable without diffusers)."""

from __future__ import annotations

import dataclasses
import json

# Champ's guidance inputs, in the order their maps are stacked.
GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")

# Stable Diffusion 1.5's UNet (the diffusers defaults fill in the rest: silu, flip_sin_to_cos, eps 1e-5).
SD15_UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}


@dataclasses.dataclass(frozen=True)
class MotionModuleConfig:
    """AnimateDiff-style temporal transformer settings (Champ's released values are the defaults)."""

    num_heads: int = 8
    """Attention heads of each temporal self-attention."""
    max_frames: int = 32
    """Length of the sinusoidal position table (``pos_encoder.pe``); windows may not be longer."""
    norm_num_groups: int = 32
    """Groups of the GroupNorm before ``proj_in``."""


@dataclasses.dataclass
class ChampModelConfig:
    """Sizes of Champ's networks (the defaults are the released model's)."""

    unet: dict = dataclasses.field(default_factory=lambda: dict(SD15_UNET_CONFIG))
    """``UNet2DConditionModel`` arguments of both UNets."""
    motion: MotionModuleConfig = dataclasses.field(default_factory=MotionModuleConfig)
    """Motion-module settings."""
    guidance_channels: tuple[int, ...] = (16, 32, 96, 256)
    """Channels of the guidance encoders' convolution blocks."""
    guidance_heads: int = 8
    """Attention heads of the guidance encoders' transformer blocks."""
    guidance_norm_groups: int = 32
    """GroupNorm groups of the guidance encoders' transformer blocks that follow a downsampling
    convolution, the last of which is the one their forward pass uses (the blocks before use 1 group,
    as in Champ's code). Must divide every entry of ``guidance_channels`` but the first."""

    def __post_init__(self):
        bad = [c for c in self.guidance_channels[1:] if c % self.guidance_norm_groups]
        if bad:
            raise ValueError(f"guidance_norm_groups={self.guidance_norm_groups} does not divide the guidance channels {bad}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ChampModelConfig:
        data = json.loads(text)
        return cls(
            unet=data["unet"], motion=MotionModuleConfig(**data["motion"]),
            guidance_channels=tuple(data["guidance_channels"]), guidance_heads=data["guidance_heads"],
            guidance_norm_groups=data.get("guidance_norm_groups", cls.guidance_norm_groups),
        )
