"""HyperHuman's networks on diffusers blocks.

- ``StructuralUNet`` (stage 1, the Latent Structural Diffusion Model): one denoiser for the RGB,
  depth and surface-normal latents at once. Each modality has its own *structural expert*: its own
  ``conv_in``, first down block, last up block and output head (``conv_norm_out`` + ``conv_out``),
  with its own skip connections between them. Everything in between (down blocks 2.., the mid
  block, up blocks ..n-1, the time embedding) is one set of modules shared by all modalities. The
  pose skeleton's latent is concatenated to every modality's noisy latent (8 input channels at SD's
  size). SDXL-style size and crop micro-conditioning is added to the time embedding.

  How the experts meet the shared trunk is not stated in the paper; here the experts' outputs of
  the first down block are averaged into the trunk, and the trunk's output feeds every expert's
  last up block. Averaging keeps the pretrained UNet's feature scale, so a model initialised from
  SD-2-base (``from_base``) computes exactly SD-2-base's prediction for each modality at the start
  when the three inputs agree (a test pins that).

- ``StructureControlNet`` (stage 2, the Structure-Guided Refiner's trainable part): a ControlNet-like
  trainable copy of the SDXL UNet's encoder (diffusers' ``ControlNetModel``) whose condition input is
  the *sum* of three embedders, one each for the skeleton, depth and normal maps. Each embedder is
  diffusers' ControlNet conditioning embedding with channels (16, 32, 96, 256): the paper's "four
  conv layers, kernel 4, stride 2, 1024 to 128" is ControlNet's own description of that embedding,
  which in fact halves three times (a stride-1 input conv, then three stride-2 stages).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

MODALITIES = ("rgb", "depth", "normal")
# The refiner's structure conditions and their channels: skeleton and normal are RGB images, depth is grey.
STRUCTURE_CONDITIONS = {"skeleton": 3, "depth": 1, "normal": 3}
EMBEDDER_CHANNELS = (16, 32, 96, 256)
SIZE_CONDITIONS = ("original_height", "original_width", "crop_top", "crop_left")

# UNet features StructuralUNet does not carry into its own forward pass.
_UNSUPPORTED = {
    "class_embed_type": None,
    "addition_embed_type": None,
    "encoder_hid_dim_type": None,
    "time_embedding_act_fn": None,
    "time_cond_proj_dim": None,
    "center_input_sample": False,
}


def plain_config(config) -> dict:
    """A diffusers config as a plain dict without its private entries (``_class_name``, ...)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


class StructuralExpert(nn.Module):
    """One modality's own layers: ``conv_in``, the first down block, the last up block and the head."""

    def __init__(
        self, conv_in: nn.Module, down: nn.Module, up: nn.Module, norm_out: nn.Module, act: nn.Module, conv_out: nn.Module
    ):
        super().__init__()
        self.conv_in, self.down, self.up = conv_in, down, up
        self.norm_out, self.act, self.conv_out = norm_out, act, conv_out

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.act(self.norm_out(hidden)))


def _down(block: nn.Module, hidden: torch.Tensor, emb: torch.Tensor, text: torch.Tensor):
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=hidden, temb=emb, encoder_hidden_states=text)
    return block(hidden_states=hidden, temb=emb)


def _up(block: nn.Module, hidden: torch.Tensor, skips: tuple, emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    if getattr(block, "has_cross_attention", False):
        return block(hidden_states=hidden, res_hidden_states_tuple=skips, temb=emb, encoder_hidden_states=text)
    return block(hidden_states=hidden, res_hidden_states_tuple=skips, temb=emb)


class StructuralUNet(ModelMixin, ConfigMixin):
    """The stage-1 denoiser: per-modality experts around one shared UNet trunk (see the module docstring).

    Config:
        unet: a ``UNet2DConditionModel`` config (``in_channels`` = latent + skeleton-latent channels).
        modalities: names of the jointly denoised targets; the first is the image.
        size_embed_dim: sinusoidal width per micro-condition (SDXL's 256).
        latent_stats: per modality, per-channel ``{"mean": [...], "std": [...]}`` of its VAE latents,
            measured by train.py; depth and normal latents are moved to the image latents' statistics
            (``to_image_statistics``) before diffusion. None: used as they are.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        unet: dict | None = None,
        modalities: Sequence[str] = MODALITIES,
        size_embed_dim: int = 256,
        latent_stats: dict | None = None,
    ):
        super().__init__()
        if not unet:
            raise ValueError("StructuralUNet needs a UNet config")
        for key, value in _UNSUPPORTED.items():
            if unet.get(key, value) != value:
                raise ValueError(f"StructuralUNet does not support a UNet with {key}={unet[key]!r}")
        if len(unet.get("down_block_types", ())) < 2:
            raise ValueError("StructuralUNet needs a UNet with at least two down blocks")
        if len(set(modalities)) != len(modalities) or not modalities:
            raise ValueError(f"modalities must be distinct names, got {list(modalities)}")
        base = UNet2DConditionModel.from_config(unet)
        self.time_proj = base.time_proj
        self.time_embedding = base.time_embedding
        time_embed_dim = base.time_embedding.linear_2.out_features
        self.size_proj = Timesteps(size_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.size_embedding = TimestepEmbedding(size_embed_dim * len(SIZE_CONDITIONS), time_embed_dim)
        self.shared_down = nn.ModuleList(base.down_blocks[1:])
        self.mid_block = base.mid_block
        self.shared_up = nn.ModuleList(base.up_blocks[:-1])
        first = StructuralExpert(
            base.conv_in, base.down_blocks[0], base.up_blocks[-1], base.conv_norm_out, base.conv_act, base.conv_out
        )
        self.experts = nn.ModuleDict({m: first if i == 0 else copy.deepcopy(first) for i, m in enumerate(modalities)})
        self.latent_channels = int(unet.get("out_channels", 4))
        self.condition_channels = int(unet.get("in_channels", 4)) - self.latent_channels
        self.up_factor = 2 ** (len(base.up_blocks) - 1)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.experts)

    # --- initialisation from a base UNet -----------------------------------------------------------

    @classmethod
    def from_base(
        cls, base: UNet2DConditionModel, *, modalities: Sequence[str] = MODALITIES, condition_channels: int | None = None
    ) -> StructuralUNet:
        """A StructuralUNet initialised from a text-to-image UNet (SD-2-base's, as in the paper).

        Every expert starts as a copy of the base's conv_in, first down block, last up block and head;
        the shared blocks take the base's weights. The skeleton's new input channels start at zero and
        so does the micro-conditioning embedding's output, so the model starts as the base UNet.

        Args:
            condition_channels: skeleton-latent channels (default: the base's latent channels).
        """
        config = plain_config(base.config)
        latent = config["in_channels"]
        config["in_channels"] = latent + (latent if condition_channels is None else condition_channels)
        config["out_channels"] = config.get("out_channels", latent)
        model = cls(unet=config, modalities=modalities)
        model.time_embedding.load_state_dict(base.time_embedding.state_dict())
        for ours, theirs in zip(model.shared_down, base.down_blocks[1:]):
            ours.load_state_dict(theirs.state_dict())
        model.mid_block.load_state_dict(base.mid_block.state_dict())
        for ours, theirs in zip(model.shared_up, base.up_blocks[:-1]):
            ours.load_state_dict(theirs.state_dict())
        with torch.no_grad():
            for expert in model.experts.values():
                expert.down.load_state_dict(base.down_blocks[0].state_dict())
                expert.up.load_state_dict(base.up_blocks[-1].state_dict())
                expert.norm_out.load_state_dict(base.conv_norm_out.state_dict())
                expert.conv_out.load_state_dict(base.conv_out.state_dict())
                expert.conv_in.weight.zero_()
                expert.conv_in.weight[:, :latent] = base.conv_in.weight
                expert.conv_in.bias.copy_(base.conv_in.bias)
            nn.init.zeros_(model.size_embedding.linear_2.weight)
            nn.init.zeros_(model.size_embedding.linear_2.bias)
        return model

    # --- latent statistics -------------------------------------------------------------------------

    def _stats(self, modality: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        stats = (self.config.latent_stats or {}).get(modality)
        if stats is None:
            return None
        mean = torch.tensor(stats["mean"], dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
        std = torch.tensor(stats["std"], dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
        return mean, std

    def to_image_statistics(self, latents: torch.Tensor, modality: str) -> torch.Tensor:
        """A modality's VAE latents [B, C, h, w] moved to the image latents' per-channel mean and std."""
        own, image = self._stats(modality, latents), self._stats(self.modalities[0], latents)
        if own is None or image is None or modality == self.modalities[0]:
            return latents
        return (latents - own[0]) / own[1] * image[1] + image[0]

    def from_image_statistics(self, latents: torch.Tensor, modality: str) -> torch.Tensor:
        """The inverse of ``to_image_statistics``: back to the modality's own VAE latents."""
        own, image = self._stats(modality, latents), self._stats(self.modalities[0], latents)
        if own is None or image is None or modality == self.modalities[0]:
            return latents
        return (latents - image[0]) / image[1] * own[1] + own[0]

    # --- forward -----------------------------------------------------------------------------------

    def forward(
        self,
        noisy: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        *,
        condition: torch.Tensor,
        size_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Predict every modality at once.

        Args:
            noisy: [M, B, C, h, w] noisy latents, one per modality in ``modalities`` order.
            timestep: one timestep for all modalities: a number or [B].
            encoder_hidden_states: [B, L, D] text tokens.
            condition: [B, Cc, h, w] skeleton latent (zeros when the condition is dropped).
            size_ids: [B, 4] original height, original width, crop top, crop left (pixels).
        Returns:
            [M, B, C, h, w] predictions (v-prediction when trained as in the paper).
        """
        M, B = noisy.shape[:2]
        if M != len(self.experts):
            raise ValueError(f"expected {len(self.experts)} modalities ({', '.join(self.experts)}), got {M}")
        if noisy.shape[-2] % self.up_factor or noisy.shape[-1] % self.up_factor:
            raise ValueError(f"latent sides must be multiples of {self.up_factor}, got {tuple(noisy.shape[-2:])}")
        dtype = noisy.dtype
        t = torch.as_tensor(timestep, device=noisy.device)
        t = t.reshape(-1).expand(B) if t.numel() in (1, B) else t
        emb = self.time_embedding(self.time_proj(t).to(dtype))
        size = self.size_proj(size_ids.reshape(-1).to(noisy.device)).reshape(B, -1).to(dtype)
        emb = emb + self.size_embedding(size)

        # Experts: conv_in and the first down block, per modality, each keeping its own skips.
        features, expert_skips = [], []
        for expert, x in zip(self.experts.values(), noisy):
            hidden = expert.conv_in(torch.cat([x, condition.to(dtype)], dim=1))
            down, res = _down(expert.down, hidden, emb, encoder_hidden_states)
            features.append(down)
            expert_skips.append((hidden, *res[:-1]))  # res[-1] is the downsampled output, fused below
        hidden = torch.stack(features).mean(0)

        # The shared trunk, once for all modalities.
        skips: tuple = (hidden,)
        for block in self.shared_down:
            hidden, res = _down(block, hidden, emb, encoder_hidden_states)
            skips += res
        if self.mid_block is not None:
            if getattr(self.mid_block, "has_cross_attention", False):
                hidden = self.mid_block(hidden, emb, encoder_hidden_states=encoder_hidden_states)
            else:
                hidden = self.mid_block(hidden, emb)
        for block in self.shared_up:
            n = len(block.resnets)
            hidden = _up(block, hidden, skips[-n:], emb, encoder_hidden_states)
            skips = skips[:-n]

        # Experts again: the last up block (with the expert's own skips) and the head.
        out = [
            expert.head(_up(expert.up, hidden, own, emb, encoder_hidden_states))
            for expert, own in zip(self.experts.values(), expert_skips)
        ]
        return torch.stack(out)


class StructureEmbedder(nn.Module):
    """The refiner's condition input: one ControlNet conditioning embedding per structure map, summed.

    Input [B, sum of channels, H, W] in [0, 1] (the maps concatenated in ``conditions`` order); output
    [B, out_channels, H / 8, W / 8]. A dropped condition is a zero image.
    """

    def __init__(
        self, out_channels: int, *, conditions: dict[str, int] = STRUCTURE_CONDITIONS, channels: Sequence[int] = EMBEDDER_CHANNELS
    ):
        super().__init__()
        self.conditions = dict(conditions)
        self.embedders = nn.ModuleDict(
            {
                name: ControlNetConditioningEmbedding(out_channels, conditioning_channels=c, block_out_channels=tuple(channels))
                for name, c in self.conditions.items()
            }
        )

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        parts = torch.split(maps, list(self.conditions.values()), dim=1)
        return sum(embedder(part) for embedder, part in zip(self.embedders.values(), parts))


class StructureControlNet(ModelMixin, ConfigMixin):
    """The refiner's trainable encoder copy with the three summed structure embedders.

    Config:
        controlnet: a diffusers ``ControlNetModel`` config (``from_unet`` builds it from SDXL's UNet).
        conditions: structure map name -> channels, in the order ``maps`` are concatenated.
        embedder_channels: each embedder's conv channels.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self, controlnet: dict | None = None, conditions: dict | None = None, embedder_channels: Sequence[int] = EMBEDDER_CHANNELS
    ):
        super().__init__()
        if not controlnet:
            raise ValueError("StructureControlNet needs a ControlNet config")
        self.encoder = ControlNetModel.from_config(controlnet)
        out_channels = self.encoder.config.block_out_channels[0]
        self.encoder.controlnet_cond_embedding = StructureEmbedder(
            out_channels, conditions=conditions or STRUCTURE_CONDITIONS, channels=embedder_channels
        )

    @property
    def conditions(self) -> dict[str, int]:
        return self.encoder.controlnet_cond_embedding.conditions

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, *, conditions: dict[str, int] | None = None) -> StructureControlNet:
        """A trainable copy of ``unet``'s encoder (time embeddings, conv_in, down and mid blocks), with
        zero-initialised output convolutions and fresh embedders, as ControlNet starts."""
        copied = ControlNetModel.from_unet(unet)
        with torch.device("meta"):
            model = cls(controlnet=plain_config(copied.config), conditions=conditions)
        copied.controlnet_cond_embedding = StructureEmbedder(
            copied.config.block_out_channels[0],
            conditions=conditions or STRUCTURE_CONDITIONS,
            channels=model.config.embedder_channels,
        )
        model.encoder = copied
        return model

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
        *,
        maps: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        scale: float = 1.0,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The residuals to add to the frozen UNet's skips and mid block.

        Args:
            sample: [B, 4, h, w] noisy latents.
            maps: [B, sum of channels, 8h, 8w] structure maps in [0, 1].
            added_cond_kwargs: SDXL's ``text_embeds`` [B, D] and ``time_ids`` [B, 6].
        Returns:
            (down residuals, mid residual), as ``UNet2DConditionModel`` takes them.
        """
        down, mid = self.encoder(
            sample, timestep, encoder_hidden_states, controlnet_cond=maps, conditioning_scale=scale, added_cond_kwargs=added_cond_kwargs, return_dict=False,
        )  # fmt: skip
        return down, mid


__all__ = [
    "EMBEDDER_CHANNELS",
    "MODALITIES",
    "SIZE_CONDITIONS",
    "STRUCTURE_CONDITIONS",
    "StructuralExpert",
    "StructuralUNet",
    "StructureControlNet",
    "StructureEmbedder",
    "plain_config",
]
