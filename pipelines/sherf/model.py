"""SHERF's networks (Hu et al., ICCV 2023), with the official parameter tree: the state dict of
``SherfGenerator(SherfModelConfig())`` has exactly the keys and shapes of the released ``G``.

- ``encoder_2d``: ResNet-18 -> a global 512-d code -> ``backbone.mapping`` (2 layers) ->
  ``backbone.synthesis`` (StyleGAN2, skip architecture) -> a tri-plane of 3 x 32 channels (planes xy,
  xz, zy) over the canonical box.
- ``encoder_2d_feature``: ResNet-18 up to layer1 without the max pool: a 64-channel half-resolution
  map. Body vertices seen by the reference camera take it (and a sin/cos encoding of their colour),
  ``conv1d_projection`` maps that to 32 channels, and ``renderer.encoder_3d`` (a sparse-conv net over
  the canonical vertices voxelised at 5 mm) gives point features from its stages 1-3.
- Per query point: the tri-plane feature, the pixel-aligned feature at the point's projection in the
  reference (after warping it into the reference pose) and the sparse-volume feature, as 3 tokens of 32
  channels (``renderer.conv1d_reprojection`` of each token's 96 channels), one pre-norm transformer
  layer, then a NeRF MLP (``decoder``): token 0 with the point's encoding gives the density, token 1
  with the view direction's encoding the colour.

The StyleGAN2 layers (modulated convolution, FIR up-sampling, equalised learning rates) are written
from the paper's and the official code's definitions, in plain torch. ``superresolution`` exists
only because the released files hold it (SHERF renders without it).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from studio.nerf import PositionalEncoding, ResNet18, SparseConvNet, SparseVolume, make_sparse_volume, sample_sparse

# ==================================================================================================
# Configuration
# ==================================================================================================


@dataclasses.dataclass(frozen=True)
class SherfModelConfig:
    """Sizes of SHERF's networks; the defaults are the released model's."""

    feature_dim: int = 32
    """Width of a token; the per-point 2D and 3D features are 3 x this (96). The ResNets' width is
    3 x feature_dim - 32 (the 32 channels of the colour encoding complete the 2D feature)."""
    w_dim: int = 512
    """Width of the mapping network's output (the StyleGAN latent)."""
    triplane_resolution: int = 256
    """Side of each tri-plane (a power of two)."""
    channel_base: int = 32768
    """StyleGAN's channel budget: a block at resolution r has min(channel_base / r, channel_max) channels."""
    channel_max: int = 512
    """StyleGAN's largest channel count."""
    decoder_width: int = 128
    """Width of the NeRF MLP."""
    sr_channels: tuple[int, int] = (256, 128)
    """Channels of the (unused) super-resolution blocks."""
    sr_resolutions: tuple[int, int] = (256, 512)
    """Resolutions of the (unused) super-resolution blocks."""
    conv_clamp: float | None = None
    """StyleGAN's activation clamp (None: off, as SHERF trains without fp16)."""
    voxel_size: float = 0.005
    """Side of the sparse volume's voxels in metres (SHERF: 5 mm; coarser voxels train faster on a CPU)."""
    body_model: str = "smpl"
    """The body model the weights were trained with (the released ones: SMPL)."""

    def __post_init__(self) -> None:
        if self.feature_dim < 11 or self.feature_dim % 2:
            raise ValueError(f"feature_dim must be an even number of at least 12, got {self.feature_dim}")
        r = self.triplane_resolution
        if r < 4 or r & (r - 1):
            raise ValueError(f"triplane_resolution must be a power of two of at least 4, got {r}")
        if not 0.001 <= self.voxel_size <= 0.1:
            raise ValueError(f"voxel_size must be 0.001-0.1 metres, got {self.voxel_size}")

    @property
    def resnet_width(self) -> int:
        return 3 * self.feature_dim - 32

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> SherfModelConfig:
        data = json.loads(text)
        for key in ("sr_channels", "sr_resolutions"):
            if key in data:
                data[key] = tuple(data[key])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        return cls(**data)


# ==================================================================================================
# StyleGAN2 layers
# ==================================================================================================

SQRT2 = math.sqrt(2.0)


def lowpass_filter() -> torch.Tensor:
    """StyleGAN's [1, 3, 3, 1] FIR filter, outer product, normalised to sum 1: [4, 4]."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, *, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Zero-insertion up-sampling, padding (negative crops), then convolution with the FIR filter
    ``f`` (a true convolution: the filter is flipped), per channel.

    Args:
        x: [B, C, H, W]; f: [fh, fw]; pad: (x before, x after, y before, y after) on the up-sampled image.
    """
    B, C, H, W = x.shape
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(B, C, H * up, W * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    kernel = (f * gain ** (f.ndim / 2)).to(x.dtype).flip([0, 1])
    return F.conv2d(x, kernel[None, None].repeat(C, 1, 1, 1), groups=C)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Twice the resolution through the FIR filter (StyleGAN's image skip path): [B, C, 2H, 2W]."""
    fw = f.shape[-1]
    return upfirdn2d(x, f, up=2, pad=((fw + 1) // 2, (fw - 2) // 2, (fw + 1) // 2, (fw - 2) // 2), gain=4.0)


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True, up: int = 1, padding: int = 0, f: torch.Tensor | None = None
) -> torch.Tensor:
    """StyleGAN2's modulated convolution, as one grouped convolution per sample.

    Args:
        x: [B, I, H, W]; weight: [O, I, k, k]; styles: [B, I].
        up: 1, or 2 (a transposed convolution followed by the FIR filter ``f``, StyleGAN's resampling).
    Returns:
        [B, O, H * up, W * up].
    """
    B, I, H, W = x.shape
    O, _, k, _ = weight.shape
    w = weight[None] * styles[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    x = x.reshape(1, B * I, H, W)
    if up == 1:
        out = F.conv2d(x, w.reshape(B * O, I, k, k), padding=padding, groups=B)
    else:
        fw = f.shape[-1]
        p0 = padding + (fw + up - 1) // 2 - (k - 1)
        p1 = padding + (fw - up) // 2 - (k - up)
        wt = w.transpose(1, 2).reshape(B * I, O, k, k)
        out = F.conv_transpose2d(x, wt, stride=up, groups=B)
        out = upfirdn2d(out, f, pad=(p0, p1, p0, p1), gain=float(up * up))
    return out.reshape(B, O, *out.shape[2:])


class FullyConnectedLayer(nn.Module):
    """StyleGAN's equalised-learning-rate linear layer (weights scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation == "lrelu" else x


class MappingNetwork(nn.Module):
    """z (the global image code, no class label) -> w, broadcast to every synthesis layer."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, *, num_layers: int = 2, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        self.num_ws, self.num_layers = num_ws, num_layers
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x[:, None].repeat(1, self.num_ws, 1)  # [B, num_ws, w_dim]


class SynthesisLayer(nn.Module):
    """A modulated 3x3 convolution (up-sampling x2 when ``up=2``), noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", lowpass_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "const", generator: torch.Generator | None = None) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, padding=1, f=self.resample_filter)
        if noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn((x.shape[0], 1, self.resolution, self.resolution), generator=generator).to(x)
            x = x + noise * self.noise_strength
        x = F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class ToRGBLayer(nn.Module):
    """A modulated 1x1 convolution without demodulation, to the image channels."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        x = x + self.bias[None, :, None, None]
        return x.clamp(-self.conv_clamp, self.conv_clamp) if self.conv_clamp is not None else x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network ("skip" architecture): conv0 (x2 up-sampling; the
    first block starts from a learned constant instead), conv1, and an image output added to the
    up-sampled image of the previous block."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, *, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", lowpass_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, **noise: Any) -> tuple[torch.Tensor, torch.Tensor]:
        w = ws.unbind(1)
        if self.in_channels == 0:
            x = self.const[None].repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, w[0], **noise)
        else:
            x = self.conv0(x, w[0], **noise)
            x = self.conv1(x, w[1], **noise)
        y = self.torgb(x, w[self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """StyleGAN2's synthesis network: blocks b4, b8, ..., b{resolution}."""

    def __init__(self, w_dim: int, resolution: int, img_channels: int, *, channel_base: int, channel_max: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        self.num_ws = 0
        for r in self.resolutions:
            block = SynthesisBlock(channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, img_channels, conv_clamp=conv_clamp)
            setattr(self, f"b{r}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's image output

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "const", generator: torch.Generator | None = None) -> torch.Tensor:
        x = img = None
        i = 0
        for r in self.resolutions:
            block = getattr(self, f"b{r}")
            x, img = block(x, img, ws[:, i : i + block.num_conv + 1], noise_mode=noise_mode, generator=generator)
            i += block.num_conv
        return img


class TriplaneBackbone(nn.Module):
    """``backbone``: the mapping and synthesis networks (EG3D's StyleGAN2 generator)."""

    def __init__(self, config: SherfModelConfig) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(
            config.w_dim, config.triplane_resolution, 3 * config.feature_dim, channel_base=config.channel_base, channel_max=config.channel_max,
            conv_clamp=config.conv_clamp,
        )  # fmt: skip
        self.mapping = MappingNetwork(8 * config.resnet_width, config.w_dim, self.synthesis.num_ws)


class SuperResolution(nn.Module):
    """EG3D's super-resolution blocks: in the released files, never run by SHERF."""

    def __init__(self, config: SherfModelConfig) -> None:
        super().__init__()
        (c0, c1), (r0, r1) = config.sr_channels, config.sr_resolutions
        self.block0 = SynthesisBlock(config.feature_dim, c0, config.w_dim, r0, 3)
        self.block1 = SynthesisBlock(c0, c1, config.w_dim, r1, 3)


# ==================================================================================================
# SHERF's own modules
# ==================================================================================================


class ResNetEncoder(nn.Module):
    """``ResNet18Classifier``: a ResNet-18 under the name ``backbone``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.backbone = ResNet18(width=width)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and layer1 without the max pool: [B, 3, H, W] -> [B, width, H/2, W/2]."""
        return self.backbone.layer1(self.backbone.stem(x))


class PreNormResidual(nn.Module):
    """x + fn(LayerNorm(x)) (the official ``Residual(PreNorm(...))``: keys ``fn.norm``, ``fn.fn``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = _PreNorm(dim, fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class TokenAttention(nn.Module):
    """Multi-head self-attention over a point's tokens (no bias on q, k, v)."""

    def __init__(self, dim: int, *, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = (t.reshape(B, N, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(B, N, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0), nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TokenTransformer(nn.Module):
    """One pre-norm transformer layer over the 3 tokens of each point (3 heads of dim/2, MLP dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        block = nn.ModuleList([PreNormResidual(dim, TokenAttention(dim, heads=3, dim_head=dim // 2)), PreNormResidual(dim, FeedForward(dim, dim))])
        self.layers = nn.ModuleList([block])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attention, mlp in self.layers:
            x = mlp(attention(x))
        return x


class NeRFDecoder(nn.Module):
    """The NeRF MLP: 8 layers with a skip after the 5th; density from [point encoding, token 0],
    colour from [feature, view encoding, token 1] (sigmoid widened by 0.001 on each side)."""

    def __init__(self, feature_dim: int, width: int) -> None:
        super().__init__()
        inputs = feature_dim + 39
        self.skips = (4,)
        self.pts_linears = nn.ModuleList([nn.Linear(inputs, width)] + [nn.Linear(width + inputs if i in self.skips else width, width) for i in range(7)])
        self.views_linear = nn.Linear(feature_dim + width + 27, width // 2)
        self.feature_linear = nn.Linear(width, width)
        self.alpha_linear = nn.Linear(width, 1)
        self.rgb_linear = nn.Linear(width // 2, 3)

    def forward(self, points: torch.Tensor, token0: torch.Tensor, views: torch.Tensor, token1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [N, 39], token0 [N, C], views [N, 27], token1 [N, C] -> (sigma [N], rgb [N, 3])."""
        x = torch.cat([points, token0], -1)
        h = x
        for i, layer in enumerate(self.pts_linears):
            h = F.relu(layer(h))
            if i in self.skips:
                h = torch.cat([x, h], -1)
        sigma = self.alpha_linear(h)[:, 0]
        h = F.relu(self.views_linear(torch.cat([self.feature_linear(h), views, token1], -1)))
        rgb = torch.sigmoid(self.rgb_linear(h)) * (1 + 2 * 0.001) - 0.001
        return sigma, rgb


class RendererModules(nn.Module):
    """``renderer``: the sparse encoder and the per-point fusion layers."""

    def __init__(self, config: SherfModelConfig) -> None:
        super().__init__()
        d = config.feature_dim
        self.encoder_3d = SparseConvNet(d, (d, d, 2 * d, 3 * d, 3 * d))
        self.conv1d_projection = nn.Conv1d(6 * d, 3 * d, 1)
        self.conv1d_reprojection = nn.Conv1d(3 * d, d, 1)
        self.transformer = TokenTransformer(d)
        self.rgb_enc = PositionalEncoding(5)
        self.pos_enc = PositionalEncoding(6)
        self.view_enc = PositionalEncoding(4)


def conv1x1(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d applied to features [..., C_in] -> [..., C_out]."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


# Plane axes (xy, xz, zy): the two coordinates of a canonical point each plane reads.
PLANE_AXES = ((0, 1), (0, 2), (2, 1))


@dataclasses.dataclass
class SherfReference:
    """What one reference photo gives the renderer (computed once per photo)."""

    planes: torch.Tensor  # [3, C, R, R] tri-plane
    feature_map: torch.Tensor  # [1, 3d - 32, S/2, S/2]
    image: torch.Tensor  # [1, 3, S, S]
    K: torch.Tensor  # [3, 3] official convention
    extrinsics: torch.Tensor  # [4, 4]
    stages: list[SparseVolume]  # sparse encoder stages 1-3
    voxel_origin: torch.Tensor  # [3] (x, y, z) of voxel (0, 0, 0)
    voxel_shape: tuple[int, int, int]  # (D, H, W) of the full-resolution grid
    plane_box: torch.Tensor  # [2, 3] the canonical box the tri-plane spans


def canonical_boxes(canonical_vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SHERF's two boxes around the canonical (big-pose) vertices [V, 3]: the tri-plane's (5 cm
    around, 15 cm along z) and the sparse volume's (5 cm around): each [2, 3]."""
    lo, hi = canonical_vertices.amin(0), canonical_vertices.amax(0)
    pad = lo.new_tensor([0.05, 0.05, 0.15])
    return torch.stack([lo - pad, hi + pad]), torch.stack([lo - 0.05, hi + 0.05])


def project_official(points: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points [N, 3] -> (pixels [N, 2] with SHERF's +1e-5 on the depth, camera points [N, 3])."""
    cam = points @ extrinsics[:3, :3].T + extrinsics[:3, 3]
    uvw = cam @ K.T
    return uvw[:, :2] / (uvw[:, 2:] + 1e-5), cam


class SherfGenerator(nn.Module):
    """``G``: SHERF's generator (see the module docstring). ``encode_reference`` runs once per photo,
    ``query`` per batch of sample points."""

    def __init__(self, config: SherfModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SherfModelConfig()
        w = config.resnet_width
        self.renderer = RendererModules(config)
        self.encoder_2d = ResNetEncoder(w)
        self.encoder_2d_feature = ResNetEncoder(w)
        self.conv1d_projection = nn.Conv1d(3 * config.feature_dim, config.feature_dim, 1)
        self.backbone = TriplaneBackbone(config)
        self.superresolution = SuperResolution(config)
        self.decoder = NeRFDecoder(config.feature_dim, config.decoder_width)

    # --- per photo -------------------------------------------------------------------------------

    def pixel_features(self, ref_map: torch.Tensor, image: torch.Tensor, points: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
        """SHERF's pixel-aligned feature of world points [N, 3] seen by the reference: the feature
        map and the sin/cos-encoded colour at their projection (official normalisation 2 uv / size - 1,
        align_corners=True): [N, 3d]."""
        uv, _ = project_official(points, K, extrinsics)
        size = image.shape[-1]
        grid = (2.0 * uv / size - 1.0)[None, :, None, :]
        feature = F.grid_sample(ref_map, grid, align_corners=True)[0, :, :, 0].T
        rgb = F.grid_sample(image, grid, align_corners=True)[0, :, :, 0].T
        return torch.cat([feature, self.renderer.rgb_enc(rgb)[:, :32]], -1)

    def encode_reference(
        self, image: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor, vertices: torch.Tensor, visible: torch.Tensor, canonical_vertices: torch.Tensor,
        *, noise_mode: str = "const", generator: torch.Generator | None = None, backend: str = "auto",
    ) -> SherfReference:  # fmt: skip
        """Everything the renderer needs from one photo.

        Args:
            image: [1, 3, S, S] in [0, 1], background black; K: [3, 3] official convention; extrinsics [4, 4].
            vertices: [V, 3] the fitted body's posed vertices (world); visible: [V] bool (facing the camera).
            canonical_vertices: [V, 3] the canonical (big-pose, neutral-shape) vertices.
            noise_mode: StyleGAN's noise: "const" (the stored noise), "random" (from ``generator``) or "none".
            backend: sparse convolution: "torch", "spconv" or "auto".
        """
        z = self.encoder_2d.backbone.global_feature(image)
        ws = self.backbone.mapping(z)
        planes = self.backbone.synthesis(ws, noise_mode=noise_mode, generator=generator)
        d = self.config.feature_dim
        planes = planes.reshape(3, d, *planes.shape[-2:])
        ref_map = self.encoder_2d_feature.feature_map(image)
        vertex_feature = conv1x1(self.conv1d_projection, self.pixel_features(ref_map, image, vertices, K, extrinsics))
        vertex_feature = vertex_feature * visible[:, None].to(vertex_feature)
        plane_box, voxel_box = canonical_boxes(canonical_vertices)
        voxel = self.config.voxel_size
        extent = ((voxel_box[1] - voxel_box[0]) / voxel).ceil().long().flip(0)  # (D, H, W) = (z, y, x)
        shape = tuple(int((int(s) | 31) + 1) for s in extent)
        coords = torch.round((canonical_vertices - voxel_box[0]) / voxel).long().flip(1)
        coords = torch.minimum(coords.clamp_min(0), torch.tensor(shape, device=coords.device) - 1)
        volume = make_sparse_volume(coords, vertex_feature, shape)
        stages = self.renderer.encoder_3d.stages(volume, count=3, backend=backend)
        return SherfReference(planes, ref_map, image, K, extrinsics, stages, voxel_box[0], shape, plane_box)

    # --- per sample point ------------------------------------------------------------------------

    def plane_features(self, ref: SherfReference, points: torch.Tensor) -> torch.Tensor:
        """Tri-plane features of canonical points [N, 3]: [3, N, C] (bilinear, align_corners=False)."""
        lo, hi = ref.plane_box
        p = 2 * (points - lo) / (hi - lo) - 1
        grid = torch.stack([p[:, list(axes)] for axes in PLANE_AXES])[:, None]  # [3, 1, N, 2]
        return F.grid_sample(ref.planes, grid, align_corners=False)[:, :, 0].transpose(1, 2)

    def volume_features(self, ref: SherfReference, points: torch.Tensor) -> torch.Tensor:
        """Sparse-volume features of canonical points [N, 3], stages 1-3 concatenated: [N, 6d]."""
        shape_xyz = torch.tensor(ref.voxel_shape, dtype=points.dtype, device=points.device).flip(0)
        grid = (points - ref.voxel_origin) / self.config.voxel_size / shape_xyz * 2 - 1  # normalised by the full grid, as SHERF
        return torch.cat([sample_sparse(stage, grid) for stage in ref.stages], -1)

    def query(self, ref: SherfReference, canonical: torch.Tensor, directions: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and colour at canonical points.

        Args:
            canonical: [N, 3] points in the canonical space; directions: [N, 3] view directions there;
            observed: [N, 3] the same points moved into the reference's pose (world).
        Returns:
            sigma [N] (raw), rgb [N, 3] in [-0.001, 1.001].
        """
        d = self.config.feature_dim
        n = canonical.shape[0]
        planes = self.plane_features(ref, canonical)  # [3, N, d]
        pixel = self.pixel_features(ref.feature_map, ref.image, observed, ref.K, ref.extrinsics).reshape(n, 3, d).transpose(0, 1)
        volume = conv1x1(self.renderer.conv1d_projection, self.volume_features(ref, canonical)).reshape(n, 3, d).transpose(0, 1)
        tokens = conv1x1(self.renderer.conv1d_reprojection, torch.cat([planes, pixel, volume], -1))  # [3, N, d]
        tokens = self.renderer.transformer(tokens.transpose(0, 1)).transpose(0, 1)
        r = self.renderer
        return self.decoder(r.pos_enc(canonical), tokens[0], r.view_enc(directions), tokens[1])


def build_generator(config: SherfModelConfig | None = None, *, seed: int | None = None, density_bias: float = 1.0) -> SherfGenerator:
    """A SHERF generator with random weights to train from (seeded when ``seed`` is given). The
    density's bias starts positive: with ReLU densities a random network whose densities are all
    negative has no gradient to learn from."""
    if seed is not None:
        torch.manual_seed(seed)
    generator = SherfGenerator(config)
    with torch.no_grad():
        generator.decoder.alpha_linear.bias.fill_(density_bias)
    return generator



# Network sizes for training from scratch: "full" is the released model's.
MODEL_SIZES: dict[str, SherfModelConfig] = {
    "tiny": SherfModelConfig(
        feature_dim=16, w_dim=32, triplane_resolution=16, channel_base=256, channel_max=32, decoder_width=32, sr_channels=(8, 8), sr_resolutions=(8, 16),
        voxel_size=0.02,
    ),
    "small": SherfModelConfig(
        feature_dim=16, w_dim=128, triplane_resolution=64, channel_base=2048, channel_max=64, decoder_width=64, sr_channels=(16, 16),
        sr_resolutions=(64, 128), voxel_size=0.02,
    ),
    "full": SherfModelConfig(),
}
