"""The SV3D prior: an orbit of views generated from the photo by SV3D (Voleti et al. 2024), or a
fine-tune of it in the same file layout (MVD-HuGaS's "SV3D-Human"), with diffusers components.

The released checkpoints (huggingface.co/stabilityai/sv3d: ``sv3d_u.safetensors``, ``sv3d_p.safetensors``)
are single files in Stability's ``generative-models`` layout; they load unmodified:
- ``model.diffusion_model.*``: the VideoUNet, as diffusers' spatio-temporal UNet (``SV3DUNet``, which
  adds SV3D's per-frame conditioning vector). Its size is read from the tensors, so fine-tunes and
  tiny test checkpoints load alike. The names are mapped in one place, ``unet_key_map``;
- ``conditioner.embedders.0.open_clip.model.visual.*``: the OpenCLIP ViT-H/14 image tower, as
  transformers' ``CLIPVisionModelWithProjection`` (``clip_key_map``);
- ``conditioner.embedders.1.encoder.*``: the image autoencoder that encodes the conditioning frame
  (encoder, decoder and quantisation convolutions), as diffusers' ``AutoencoderKL`` (diffusers' own
  LDM conversion). studio decodes the generated latents with its decoder too, frame by frame (sv3d_p's
  temporal video decoder in ``first_stage_model`` is not used).

Conditioning, as in generative-models' sampling script: the photo (person centred on white, 576x576,
the person filling ``IMAGE_FRAC`` of the frame) is encoded by CLIP (cross-attention) and by the
autoencoder (concatenated to every frame's latent, with 1e-5 noise augmentation); the per-frame
vector is [cond_aug (256), polar (512), azimuth (512)] sinusoidal embeddings (sv3d_u: cond_aug only).
Frame k shows azimuth (k + 1) * 360 / 21 degrees from the photo, the last frame the photo's view.
Sampling: EDM Euler (diffusers' EulerDiscreteScheduler with Karras sigmas up to 700, v-prediction),
classifier-free guidance with a triangle of scales over the frames (1 at the ends, ``guidance`` in
the middle), the unconditional branch with zero CLIP and zero concatenated latents.
Unverified without the weights: the direction in which azimuth turns, and the object framing SV3D
expects; the fit's per-view camera correction absorbs small framing errors.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import Timesteps

from studio.camera import Camera
from studio.errors import StudioError

from .prior import PriorContext, Views, photo_viewpoint, ring_cameras

logger = logging.getLogger(__name__)

NUM_FRAMES = 21
RESOLUTION = 576
IMAGE_FRAC = 0.85  # share of the frame the person's box fills in SV3D's input
COND_AUG = 1e-5
AZIMUTH_SIGN = 1.0  # +1: azimuth turns as studio's orbit cameras do (unverified, see the module docstring)
UNET_PREFIX = "model.diffusion_model."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
VAE_PREFIX = "conditioner.embedders.1.encoder."
CAMERA_DIMS = {256: (256,), 1280: (256, 512, 512)}  # adm_in_channels -> embedding size of each vector entry
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class SV3DUNet(UNetSpatioTemporalConditionModel):
    """diffusers' spatio-temporal UNet with SV3D's conditioning: a vector per frame (cond_aug, and for
    sv3d_p the camera's polar and azimuth angles), each entry embedded sinusoidally at its own size,
    projected by ``add_embedding`` and added to that frame's time embedding."""

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = ("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
        up_block_types: tuple[str, ...] = ("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        cross_attention_dim: int = 1024,
        num_attention_heads: tuple[int, ...] = (5, 10, 20, 20),
        num_frames: int = NUM_FRAMES,
        camera_embed_dims: tuple[int, ...] = (256, 512, 512),
    ) -> None:
        super().__init__(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels, down_block_types=down_block_types,
            up_block_types=up_block_types, block_out_channels=block_out_channels, addition_time_embed_dim=camera_embed_dims[0],
            projection_class_embeddings_input_dim=sum(camera_embed_dims), layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim, num_attention_heads=num_attention_heads, num_frames=num_frames,
        )  # fmt: skip
        self.vector_projs = [Timesteps(d, True, downscale_freq_shift=0) for d in camera_embed_dims]

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, frame_vectors: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Predict v for a batch of orbits.

        Args:
            sample: [B, T, C_in, h, w] noisy latents with the conditioning latent concatenated.
            timestep: [B] or a scalar (EDM c_noise).
            encoder_hidden_states: [B, 1, D] CLIP image embeddings.
            frame_vectors: [B, T, K] per-frame values (cond_aug, polar, azimuth; radians).
        Returns:
            [B, T, C_out, h, w].
        """
        B, T = sample.shape[:2]
        timestep = torch.as_tensor(timestep, dtype=sample.dtype, device=sample.device).reshape(-1).expand(B)
        emb = self.time_embedding(self.time_proj(timestep).to(sample.dtype)).repeat_interleave(T, dim=0)  # [B*T, D]
        vec = frame_vectors.reshape(B * T, -1)
        embedded = torch.cat([proj(vec[:, k]) for k, proj in enumerate(self.vector_projs)], -1).to(sample.dtype)
        emb = emb + self.add_embedding(embedded)
        hidden = encoder_hidden_states.repeat_interleave(T, dim=0)
        x = self.conv_in(sample.flatten(0, 1))
        image_only = torch.zeros(B, T, dtype=x.dtype, device=x.device)
        skips = (x,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": hidden} if getattr(block, "has_cross_attention", False) else {}
            x, res = block(hidden_states=x, temb=emb, image_only_indicator=image_only, **kwargs)
            skips += res
        x = self.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=hidden, image_only_indicator=image_only)
        for block in self.up_blocks:
            res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            kwargs = {"encoder_hidden_states": hidden} if getattr(block, "has_cross_attention", False) else {}
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, image_only_indicator=image_only, **kwargs)
        x = self.conv_out(torch.nn.functional.silu(self.conv_norm_out(x)))
        return x.reshape(B, T, *x.shape[1:])


# --- names: generative-models <-> diffusers / transformers ----------------------------------------

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def _resnet_name(rest: str) -> str:
    part, _, tail = rest.partition(".")
    if part == "spatial_res_block":
        layer, _, leaf = tail.partition(".")
        return f"{_RESNET[layer]}.{leaf}"
    if part == "temporal_res_block":
        layer, _, leaf = tail.partition(".")
        return f"time_stack.{_RESNET[layer]}.{leaf}"
    return rest  # time_mixer.mix_factor


def _attention_name(rest: str) -> str:
    rest = rest.replace("temporal_transformer_blocks", "time_stack")
    return rest.replace("time_pos_embed.linear_1", "time_pos_embed.0").replace("time_pos_embed.linear_2", "time_pos_embed.2")


def sgm_unet_name(key: str, *, layers_per_block: int, attention_up: tuple[bool, ...]) -> str:
    """The generative-models VideoUNet name of a diffusers spatio-temporal UNet parameter."""
    L = layers_per_block
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
           "add_embedding.linear_2": "label_emb.0.2", "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
    module, _, leaf = key.rpartition(".")
    if module in top:
        return f"{top[module]}.{leaf}"
    p = key.split(".")
    rest = ".".join(p[4:])
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "downsamplers":
            return f"input_blocks.{1 + b * (L + 1) + L}.0.op.{p[-1]}"
        index = 1 + b * (L + 1) + int(p[3])
        return f"input_blocks.{index}.0.{_resnet_name(rest)}" if p[2] == "resnets" else f"input_blocks.{index}.1.{_attention_name(rest)}"
    if p[0] == "mid_block":
        rest = ".".join(p[3:])
        if p[1] == "attentions":
            return f"middle_block.1.{_attention_name(rest)}"
        return f"middle_block.{2 * int(p[2])}.{_resnet_name(rest)}"
    if p[0] == "up_blocks":
        b = int(p[1])
        if p[2] == "upsamplers":
            return f"output_blocks.{b * (L + 1) + L}.{2 if attention_up[b] else 1}.conv.{p[-1]}"
        index = b * (L + 1) + int(p[3])
        return f"output_blocks.{index}.0.{_resnet_name(rest)}" if p[2] == "resnets" else f"output_blocks.{index}.1.{_attention_name(rest)}"
    raise KeyError(key)


def unet_key_map(unet: SV3DUNet) -> dict[str, str]:
    """diffusers parameter name -> generative-models name (without ``model.diffusion_model.``)."""
    attention_up = tuple(getattr(b, "has_cross_attention", False) for b in unet.up_blocks)
    L = unet.config.layers_per_block
    return {k: sgm_unet_name(k, layers_per_block=L, attention_up=attention_up) for k in unet.state_dict()}


def clip_key_map(num_layers: int) -> dict[str, tuple[str, int | None]]:
    """transformers CLIPVisionModelWithProjection name -> (OpenCLIP ``visual.`` name, which third of a
    fused q/k/v tensor or None). ``visual_projection.weight`` is OpenCLIP's ``proj`` transposed."""
    out = {
        "vision_model.embeddings.class_embedding": ("class_embedding", None),
        "vision_model.embeddings.position_embedding.weight": ("positional_embedding", None),
        "vision_model.embeddings.patch_embedding.weight": ("conv1.weight", None),
        "vision_model.pre_layrnorm.weight": ("ln_pre.weight", None), "vision_model.pre_layrnorm.bias": ("ln_pre.bias", None),
        "vision_model.post_layernorm.weight": ("ln_post.weight", None), "vision_model.post_layernorm.bias": ("ln_post.bias", None),
        "visual_projection.weight": ("proj", None),
    }  # fmt: skip
    for i in range(num_layers):
        hf, oc = f"vision_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{hf}self_attn.{name}.weight"] = (f"{oc}attn.in_proj_weight", j)
            out[f"{hf}self_attn.{name}.bias"] = (f"{oc}attn.in_proj_bias", j)
        pairs = (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"))
        for a, b in pairs:
            for leaf in ("weight", "bias"):
                out[f"{hf}{a}.{leaf}"] = (f"{oc}{b}.{leaf}", None)
    return out


# --- loading ---------------------------------------------------------------------------------------


def _take(checkpoint: dict, name: str, path: Path) -> torch.Tensor:
    if name not in checkpoint:
        raise StudioError(f"{path}: no tensor '{name}'; is this an SV3D checkpoint (sv3d_u/sv3d_p from huggingface.co/stabilityai/sv3d)?")
    return checkpoint[name]


def _load_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    for name, value in expected.items():
        if name not in tensors:
            raise StudioError(f"{path}: the {what} lacks the tensor for '{name}'")
        if tuple(tensors[name].shape) != tuple(value.shape):
            raise StudioError(f"{path}: tensor for '{name}' ({what}) has shape {list(tensors[name].shape)}, expected {list(value.shape)}")
    module.load_state_dict({k: tensors[k].to(expected[k].dtype) for k in expected}, strict=True)


def unet_config_from(checkpoint: dict, path: Path) -> dict:
    """The SV3DUNet configuration that fits a generative-models VideoUNet state dict."""
    sd = {k[len(UNET_PREFIX) :]: v for k, v in checkpoint.items() if k.startswith(UNET_PREFIX)}
    if not sd:
        raise StudioError(f"{path}: no '{UNET_PREFIX}*' tensors; not an SV3D checkpoint in the generative-models layout")
    inputs = sorted({int(k.split(".")[1]) for k in sd if k.startswith("input_blocks.")})
    first_down = min((int(k.split(".")[1]) for k in sd if k.startswith("input_blocks.") and ".0.op." in k), default=None)
    if first_down is None:
        raise StudioError(f"{path}: the UNet has no downsampling layers")
    L = first_down - 1
    levels = len(inputs) // (L + 1)
    channels, attention = [], []
    for b in range(levels):
        i = 1 + b * (L + 1)
        channels.append(int(_take(sd, f"input_blocks.{i}.0.out_layers.3.weight", path).shape[0]))
        attention.append(f"input_blocks.{i}.1.proj_in.weight" in sd)
    adm = int(_take(sd, "label_emb.0.0.weight", path).shape[1])
    if adm not in CAMERA_DIMS:
        raise StudioError(f"{path}: the UNet's conditioning vector has {adm} entries; SV3D's have 256 (sv3d_u) or 1280 (sv3d_p)")
    context = next(v.shape[1] for k, v in sd.items() if k.endswith("attn2.to_k.weight"))
    return {
        "in_channels": int(sd["input_blocks.0.0.weight"].shape[1]), "out_channels": int(_take(sd, "out.2.weight", path).shape[0]),
        "down_block_types": tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attention),
        "up_block_types": tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(attention)),
        "block_out_channels": tuple(channels), "layers_per_block": L, "cross_attention_dim": int(context),
        "num_attention_heads": tuple(max(1, c // 64) for c in channels), "camera_embed_dims": CAMERA_DIMS[adm],
    }  # fmt: skip


def load_unet(checkpoint: dict, path: Path) -> SV3DUNet:
    unet = SV3DUNet(**unet_config_from(checkpoint, path))
    names = unet_key_map(unet)
    tensors = {k: _take(checkpoint, UNET_PREFIX + v, path) for k, v in names.items()}
    unused = {k for k in checkpoint if k.startswith(UNET_PREFIX)} - {UNET_PREFIX + v for v in names.values()}
    if unused:
        raise StudioError(f"{path}: the UNet has {len(unused)} tensors studio does not know, e.g. '{sorted(unused)[0]}'")
    _load_strict(unet, tensors, path, "UNet")
    return unet.eval()


def load_image_encoder(checkpoint: dict, path: Path):
    """OpenCLIP's image tower as a CLIPVisionModelWithProjection (its size read from the tensors)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    sd = {k[len(CLIP_PREFIX) :]: v for k, v in checkpoint.items() if k.startswith(CLIP_PREFIX)}
    conv = _take(sd, "conv1.weight", path)
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    positions = int(_take(sd, "positional_embedding", path).shape[0])
    config = CLIPVisionConfig(
        hidden_size=width, intermediate_size=int(_take(sd, "transformer.resblocks.0.mlp.c_fc.weight", path).shape[0]),
        num_hidden_layers=layers, num_attention_heads=max(1, width // 80), image_size=patch * round(math.sqrt(positions - 1)),
        patch_size=patch, projection_dim=int(_take(sd, "proj", path).shape[1]), hidden_act="gelu", layer_norm_eps=1e-5,
    )  # fmt: skip
    model = CLIPVisionModelWithProjection(config)
    tensors = {}
    for hf, (oc, third) in clip_key_map(layers).items():
        value = _take(sd, oc, path)
        if third is not None:
            value = value.chunk(3)[third]
        tensors[hf] = value.T if hf == "visual_projection.weight" else value
    _load_strict(model, tensors, path, "image encoder")
    return model.eval()


def load_vae(checkpoint: dict, path: Path) -> AutoencoderKL:
    """The conditioning autoencoder (LDM names, diffusers' conversion), its size read from the tensors."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = {k[len(VAE_PREFIX) :]: v for k, v in checkpoint.items() if k.startswith(VAE_PREFIX)}
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
    if not levels or "decoder.conv_in.weight" not in sd:
        raise StudioError(f"{path}: no autoencoder under '{VAE_PREFIX}' (encoder and decoder); not an SV3D checkpoint?")
    channels = tuple(int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels)
    per_level = len({k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")})
    config = {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]), "out_channels": int(_take(sd, "decoder.conv_out.weight", path).shape[0]),
        "down_block_types": ("DownEncoderBlock2D",) * len(levels), "up_block_types": ("UpDecoderBlock2D",) * len(levels),
        "block_out_channels": channels, "layers_per_block": per_level, "latent_channels": int(_take(sd, "quant_conv.weight", path).shape[0]) // 2,
        "norm_num_groups": min(32, channels[0]), "scaling_factor": 0.18215,
    }  # fmt: skip
    vae = AutoencoderKL(**config)
    _load_strict(vae, convert_ldm_vae_checkpoint(sd, config), path, "autoencoder")
    return vae.eval()


def load_checkpoint(path: Path) -> tuple[SV3DUNet, AutoencoderKL, object]:
    """(UNet, autoencoder, image encoder) from an SV3D .safetensors in the generative-models layout."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        checkpoint = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise StudioError(f"{path}: not a readable .safetensors file ({exc})") from None
    return load_unet(checkpoint, path), load_vae(checkpoint, path), load_image_encoder(checkpoint, path)


# --- the prior --------------------------------------------------------------------------------------


def edm_scheduler() -> EulerDiscreteScheduler:
    """EDM Euler as generative-models samples SV3D (Karras sigmas 0.002..700, v-prediction)."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_min=0.002, sigma_max=700.0, use_karras_sigmas=True,
        timestep_type="continuous", interpolation_type="linear", timestep_spacing="leading", steps_offset=1,
    )  # fmt: skip


def triangle_scales(num_frames: int, max_scale: float, min_scale: float = 1.0) -> torch.Tensor:
    """Per-frame guidance [T]: min_scale at the first and last frames, max_scale in the middle."""
    v = torch.linspace(0, 1, num_frames)
    return 2 * (v - torch.floor(v + 0.5)).abs() * (max_scale - min_scale) + min_scale


class SV3DPrior:
    """Views of the person from SV3D: 21 frames on an orbit at the photo's elevation."""

    name = "sv3d"
    exact_cameras = False  # generated views: their poses are nominal, the fit's camera alignment corrects them

    def __init__(self, unet: SV3DUNet, vae: AutoencoderKL, image_encoder, *, steps: int = 25, guidance: float = 2.5, resolution: int = RESOLUTION) -> None:
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        self.steps, self.guidance, self.resolution = steps, guidance, resolution
        self.num_frames = unet.config.num_frames
        self.elevations = (0.0,)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for module in (unet, vae, image_encoder):
            module.to(self.device)

    @classmethod
    def from_checkpoint(cls, path: Path, *, steps: int = 25, guidance: float = 2.5, resolution: int = RESOLUTION) -> SV3DPrior:
        unet, vae, image_encoder = load_checkpoint(Path(path))
        return cls(unet, vae, image_encoder, steps=steps, guidance=guidance, resolution=resolution)

    def _focal(self, context: PriorContext) -> float:
        """Focal length (pixels at RESOLUTION) of the photo's camera after SV3D's crop."""
        box = _person_box(context)
        return float(context.condition.camera.K[0, 0, 0]) * self.resolution * IMAGE_FRAC / max(box[2] - box[0], box[3] - box[1])

    def cameras(self, context: PriorContext, *, num_views: int, size: int) -> Camera:
        """The 21 frames' nominal cameras (``num_views`` is ignored: SV3D makes its own 21), at ``size``."""
        vp = photo_viewpoint(context.condition, context.body_model)
        angles = [(vp.azimuth + AZIMUTH_SIGN * 2 * math.pi * (k + 1) / self.num_frames, vp.elevation) for k in range(self.num_frames)]
        return ring_cameras(vp.centre, distance=vp.distance, angles=angles, size=size, focal=self._focal(context) * size / self.resolution)

    def input_image(self, context: PriorContext) -> np.ndarray:
        """The photo as SV3D takes it: the person on white, centred, filling IMAGE_FRAC, [R, R, 3] float 0..1."""
        import cv2

        x0, y0, x1, y1 = _person_box(context)
        side = max(x1 - x0, y1 - y0) / IMAGE_FRAC
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        scale = self.resolution / side
        M = np.array([[scale, 0, self.resolution / 2 - cx * scale], [0, scale, self.resolution / 2 - cy * scale]], np.float32)
        alpha = context.mask.astype(np.float32) / 255.0
        rgb = context.image.astype(np.float32) / 255.0 * alpha[..., None] + (1 - alpha[..., None])
        return cv2.warpAffine(rgb, M, (self.resolution, self.resolution), flags=cv2.INTER_AREA, borderValue=(1.0, 1.0, 1.0))

    @torch.no_grad()
    def generate(self, context: PriorContext, cameras: Camera, *, on_progress=None) -> Views:
        """Sample the orbit and return it at the cameras' size, with person masks (non-white pixels)."""
        import cv2

        dev, T = self.device, self.num_frames
        image = torch.from_numpy(self.input_image(context)).permute(2, 0, 1)[None].to(dev)  # [1, 3, R, R] 0..1
        generator = torch.Generator().manual_seed(context.seed)
        clip_in = torch.nn.functional.interpolate(image, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
        clip_in = (clip_in - torch.tensor(CLIP_MEAN, device=dev)[:, None, None]) / torch.tensor(CLIP_STD, device=dev)[:, None, None]
        embeds = self.image_encoder(pixel_values=clip_in).image_embeds[:, None]  # [1, 1, D]
        signed = image * 2 - 1
        noisy = signed + COND_AUG * torch.randn(signed.shape, generator=generator).to(dev)
        cond_latent = self.vae.encode(noisy).latent_dist.mode()  # [1, 4, h, w]
        elevation = photo_viewpoint(context.condition, context.body_model).elevation
        azimuths = [(AZIMUTH_SIGN * 2 * math.pi * (k + 1) / T) % (2 * math.pi) for k in range(T)]
        values = [[COND_AUG] for _ in range(T)]
        if len(self.unet.config.camera_embed_dims) == 3:
            values = [[COND_AUG, math.pi / 2 - elevation, a] for a in azimuths]
        vectors = torch.tensor(values, dtype=torch.float32, device=dev)[None]  # [1, T, K]
        scheduler = edm_scheduler()
        scheduler.set_timesteps(self.steps, device=dev)
        h, w = cond_latent.shape[-2:]
        latents = torch.randn((1, T, 4, h, w), generator=generator).to(dev) * scheduler.init_noise_sigma
        concat = cond_latent[:, None].expand(1, T, -1, -1, -1)
        scales = triangle_scales(T, self.guidance).to(dev)[None, :, None, None, None]
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.scale_model_input(latents, t)
            both = torch.cat([torch.cat([x, torch.zeros_like(concat)], 2), torch.cat([x, concat], 2)])
            v = self.unet(both, t, torch.cat([torch.zeros_like(embeds), embeds]), torch.cat([vectors, vectors]))
            v_u, v_c = v.chunk(2)
            latents = scheduler.step(v_u + scales * (v_c - v_u), t, latents).prev_sample
            if on_progress is not None:
                on_progress(i + 1, self.steps)
        frames = []
        for k in range(T):
            decoded = self.vae.decode(latents[:, k] / self.vae.config.scaling_factor).sample  # [1, 3, R, R] -1..1
            frames.append(((decoded[0].permute(1, 2, 0).float().cpu().numpy() + 1) / 2).clip(0, 1))
        size = cameras.image_size
        images = np.stack([cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_AREA) for f in frames])
        masks = (1.0 - images.min(-1) > 0.04).astype(np.float32)  # SV3D draws on white
        masks = np.stack([cv2.GaussianBlur(m, (0, 0), 0.7) for m in masks])
        return Views(images=torch.from_numpy(images).float(), masks=torch.from_numpy(masks).float(), camera=cameras)


def _person_box(context: PriorContext) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(context.mask > 127)
    if len(xs) == 0:
        raise StudioError("no person found in the reference (its person mask is empty)")
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


__all__ = ["SV3DPrior", "SV3DUNet", "clip_key_map", "load_checkpoint", "sgm_unet_name", "triangle_scales", "unet_key_map"]
