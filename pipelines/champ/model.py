"""Champ's networks, built from diffusers blocks with the official checkpoints' key names.

- ``VideoUNet``: Stable Diffusion 1.5's ``UNet2DConditionModel`` run on every frame (frames folded into
  the batch, which is what Champ's "inflated" 3D convolutions compute), with AnimateDiff-style motion
  modules attached to its blocks. A motion module follows each attention (each resnet in blocks
  without attention, and the attention of the mid block), so its keys are
  ``down_blocks.i.motion_modules.j.temporal_transformer...`` inside the UNet's own state dict.
- ``ReferenceBank``: reference attention. The reference UNet's self-attention layers store their inputs;
  the denoising UNet's self-attention layers of the same name attend over their own tokens plus the
  stored reference tokens. Done with diffusers attention processors, matched by layer name.
- ``GuidanceEncoder``: one per guidance map; convolutions down to the latent resolution, the last of six
  transformer blocks, and a zero-initialised ``conv_out`` to the UNet's first channel count.

All tensors in a ``VideoUNet`` are [B, C, F, H, W] at the interface and [(B F), C, H, W] inside.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from .config import GUIDANCE_TYPES, SD15_UNET_CONFIG, ChampModelConfig, MotionModuleConfig

class TemporalPositionalEncoding(nn.Module):
    """Adds a fixed sinusoidal code of the frame index to every token."""

    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        position = torch.arange(max_frames, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_frames, dim)
        pe[0, :, 0::2] = torch.sin(position * frequency)
        pe[0, :, 1::2] = torch.cos(position * frequency)
        self.register_buffer("pe", pe)  # saved in motion_module.pth  # [1, max_frames, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, F, C]
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"a window of {x.shape[1]} frames is longer than the motion modules' {self.pe.shape[1]}")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention across frames at each spatial position (a diffusers ``Attention`` plus positions)."""

    def __init__(self, dim: int, config: MotionModuleConfig):
        super().__init__(query_dim=dim, heads=config.num_heads, dim_head=dim // config.num_heads, bias=False)
        self.pos_encoder = TemporalPositionalEncoding(dim, config.max_frames)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # [(B F), N, C]
        bf, n, c = hidden_states.shape
        x = hidden_states.reshape(bf // num_frames, num_frames, n, c).transpose(1, 2).reshape(-1, num_frames, c)
        x = super().forward(self.pos_encoder(x))
        return x.reshape(bf // num_frames, n, num_frames, c).transpose(1, 2).reshape(bf, n, c)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, config: MotionModuleConfig):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalSelfAttention(dim, config) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:  # [(B F), N, C]
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x), num_frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.norm = nn.GroupNorm(config.norm_num_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, config)])
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)  # a new motion module starts as the identity
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # [(B F), C, H, W]
        bf, c, h, w = hidden_states.shape
        x = self.norm(hidden_states).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, num_frames)
        x = self.proj_out(x).reshape(bf, h, w, c).permute(0, 3, 1, 2)
        return x + hidden_states


class MotionModule(nn.Module):
    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, config)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(hidden_states, num_frames)


def _motion_hosts(block: nn.Module) -> list[nn.Module]:
    """The layers a block's motion modules follow: its attentions, else its resnets."""
    attentions = getattr(block, "attentions", None)
    return list(attentions) if attentions else list(block.resnets)


def _host_channels(host: nn.Module) -> int:
    return host.in_channels if isinstance(host, Transformer2DModel) else host.out_channels


class VideoUNet(nn.Module):
    """A ``UNet2DConditionModel`` applied per frame, with optional motion modules and guidance input.

    ``unet.state_dict()`` holds the official key names: without motion modules it is exactly
    denoising_unet.pth; with them it is denoising_unet.pth plus motion_module.pth.
    """

    def __init__(self, unet: UNet2DConditionModel, motion: MotionModuleConfig | None = None):
        super().__init__()
        self.unet = unet
        self._num_frames = 1
        self._guidance: torch.Tensor | None = None
        self.unet.conv_in.register_forward_hook(self._add_guidance)
        self.motion_config: MotionModuleConfig | None = None
        if motion is not None:
            self.add_motion_modules(motion)

    def add_motion_modules(self, config: MotionModuleConfig | None = None) -> None:
        """Attach new (identity-initialised) motion modules to every block."""
        if self.motion_config is not None:
            raise ValueError("the UNet already has motion modules")
        config = config or MotionModuleConfig()
        unet = self.unet
        param = next(unet.parameters())
        for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            hosts = _motion_hosts(block)
            block.motion_modules = nn.ModuleList([MotionModule(_host_channels(h), config) for h in hosts]).to(param.device, param.dtype)
            for host, module in zip(hosts, block.motion_modules):
                host.register_forward_hook(self._motion_hook(module))
        self.motion_config = config

    def motion_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.unet.named_parameters() if "motion_modules" in name]

    def _motion_hook(self, module: MotionModule) -> Callable:
        def hook(_host, _inputs, output):
            if isinstance(output, tuple):  # attentions return (hidden_states,)
                return (module(output[0], self._num_frames), *output[1:])
            return module(output, self._num_frames)

        return hook

    def _add_guidance(self, _conv, _inputs, output: torch.Tensor) -> torch.Tensor:
        return output if self._guidance is None else output + self._guidance

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The UNet's prediction for a batch of clips.

        Args:
            sample: noisy latents [B, C, F, H, W].
            timestep: a scalar or [B].
            encoder_hidden_states: cross-attention tokens per clip [B, L, D].
            guidance: features added to ``conv_in``'s output [B, C0, F, H, W], or None.
        Returns:
            [B, C, F, H, W]
        """
        b, c, f, h, w = sample.shape
        x = sample.transpose(1, 2).reshape(b * f, c, h, w)
        t = torch.as_tensor(timestep, device=sample.device)
        t = (t.expand(b) if t.ndim == 0 else t).repeat_interleave(f)
        tokens = encoder_hidden_states.repeat_interleave(f, dim=0)
        # The frame count stays set after the call: gradient checkpointing re-runs the motion modules
        # during the backward pass. The guidance is only read by conv_in, which is never re-run.
        self._num_frames = f
        self._guidance = None if guidance is None else guidance.transpose(1, 2).reshape(b * f, *guidance.shape[1:2], h, w)
        try:
            out = self.unet(x, t, tokens, return_dict=False)[0]
        finally:
            self._guidance = None
        return out.reshape(b, f, -1, h, w).transpose(1, 2)


def build_unet(config: dict | None = None, *, reference: bool = False) -> UNet2DConditionModel:
    """SD 1.5's UNet (or another config). ``reference=True`` drops the unused output head, as
    reference_unet.pth does (``conv_norm_out``/``conv_out`` become parameter-free identities)."""
    unet = UNet2DConditionModel(**(config or SD15_UNET_CONFIG))
    if reference:
        unet.conv_norm_out = nn.Identity()
        unet.conv_act = nn.Identity()
        unet.conv_out = nn.Identity()
    return unet


def build_networks(config: ChampModelConfig, *, motion: bool = True) -> tuple[UNet2DConditionModel, VideoUNet, dict[str, GuidanceEncoder]]:
    """Champ's trainable networks at the sizes of ``config``: (reference UNet, denoising UNet, guidance encoders)."""
    reference = build_unet(config.unet, reference=True)
    denoising = VideoUNet(build_unet(config.unet), config.motion if motion else None)
    channels = config.unet["block_out_channels"][0]
    encoders = {
        g: GuidanceEncoder(channels, block_out_channels=config.guidance_channels, num_heads=config.guidance_heads, norm_num_groups=config.guidance_norm_groups)
        for g in GUIDANCE_TYPES
    }
    return reference, denoising, encoders


class GuidanceEncoder(nn.Module):
    """One guidance map [B, 3, F, H, W] in [0, 1] -> features [B, C0, F, H/8, W/8] for the UNet's conv_in.

    Each of the three stages is a convolution and a strided convolution, each paired (for the key set)
    with a transformer block. The block of a convolution normalises over 1 group and the block of a
    strided convolution over ``norm_num_groups``, as in Champ's code; the forward pass uses only the
    last block (so 32 groups at the released sizes), as released.
    """

    def __init__(
        self,
        out_channels: int = 320,
        *,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        num_heads: int = 8,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for c_in, c_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
            for c, groups in ((c_in, 1), (c_out, norm_num_groups)):
                self.attentions.append(Transformer2DModel(num_attention_heads=num_heads, attention_head_dim=c // num_heads, in_channels=c, norm_num_groups=groups))
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:  # [B, 3, F, H, W] -> [B, C0, F, H/8, W/8]
        b, c, f, h, w = maps.shape
        x = F.silu(self.conv_in(maps.transpose(1, 2).reshape(b * f, c, h, w)))
        for block in self.blocks:
            x = F.silu(block(x))
        # As released, only the last transformer block is used; the others are kept for the key set.
        x = self.conv_out(self.attentions[-1](x, return_dict=False)[0])
        return x.reshape(b, f, *x.shape[1:]).transpose(1, 2)


def encode_guidance(encoders: nn.ModuleDict, maps: torch.Tensor, order: tuple[str, ...]) -> torch.Tensor:
    """The summed features of several guidance maps.

    Args:
        encoders: guidance type -> GuidanceEncoder.
        maps: the maps stacked on channels in ``order``, 3 each, in [0, 1] [B, 3 * len(order), F, H, W].
    Returns:
        [B, C0, F, H/8, W/8]
    """
    return sum(encoders[g](maps[:, 3 * i : 3 * i + 3]) for i, g in enumerate(order))


class _WriteReference(AttnProcessor2_0):
    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        self.bank.features[self.name] = hidden_states
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class _ReadReference(AttnProcessor2_0):
    def __init__(self, bank: ReferenceBank, name: str):
        super().__init__()
        self.bank, self.name = bank, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        attend = super().__call__
        reference = self.bank.features.get(self.name)
        readers = self.bank.readers  # on the CPU: the row selection below never waits for the device
        if reference is None or (readers is not None and not readers.any()):
            return attend(attn, hidden_states, None, attention_mask, temb)  # plain self-attention
        reading = hidden_states
        if readers is not None and not readers.all():
            rows = readers.repeat_interleave(hidden_states.shape[0] // readers.shape[0])  # [(B F)]
            read_rows, plain_rows = (r.nonzero()[:, 0].to(hidden_states.device) for r in (rows, ~rows))
            reading = hidden_states.index_select(0, read_rows)
        # self tokens + the reference's tokens, each reading sample's reference repeated for its frames
        reference = reference.to(hidden_states.dtype).repeat_interleave(reading.shape[0] // reference.shape[0], dim=0)
        read = attend(attn, reading, torch.cat([reading, reference], dim=1), attention_mask, temb)
        if reading is hidden_states:
            return read
        plain = attend(attn, hidden_states.index_select(0, plain_rows), None, attention_mask, temb)
        out = read.new_empty(hidden_states.shape[0], *read.shape[1:])
        return out.index_copy(0, read_rows, read).index_copy(0, plain_rows, plain)


class ReferenceBank:
    """Connects a reference UNet's self-attention layers to the denoising UNet's layers of the same name.

    Run the reference UNet once (its layers write ``features``); afterwards every denoising forward
    reads them: a reading sample's self-attention attends over its own tokens plus its reference's.
    ``readers`` says which samples of the denoising batch read: a [B] bool tensor on the CPU, or None
    for all.
    Champ's unconditional samples do not read (``[False, True]`` for a classifier-free-guidance batch
    [uncond, cond]): they get plain self-attention. The reference batch is one per reading sample, or
    one for all of them; each is repeated for the sample's frames.
    """

    def __init__(self, reference_unet: UNet2DConditionModel, denoising_unet: UNet2DConditionModel):
        self.features: dict[str, torch.Tensor] = {}  # layer name -> [B_ref, N, C]
        self.readers: torch.Tensor | None = None  # [B] bool, on the CPU
        names = self._self_attention_names(reference_unet)
        if names != self._self_attention_names(denoising_unet):
            raise ValueError("the reference and denoising UNets have different self-attention layers")
        for unet, kind in ((reference_unet, _WriteReference), (denoising_unet, _ReadReference)):
            processors = dict(unet.attn_processors)
            for name in names:
                processors[name] = kind(self, name)
            unet.set_attn_processor(processors)

    @staticmethod
    def _self_attention_names(unet: UNet2DConditionModel) -> list[str]:
        return [n for n in unet.attn_processors if n.endswith("attn1.processor") and "motion_modules" not in n]

    def clear(self) -> None:
        """Forget the features and the readers: the denoising UNet's self-attention is plain again."""
        self.features.clear()
        self.readers = None


__all__ = [
    "GuidanceEncoder",
    "MotionModule",
    "MotionModuleConfig",
    "ReferenceBank",
    "SD15_UNET_CONFIG",
    "VideoUNet",
    "build_networks",
    "build_unet",
    "encode_guidance",
]
