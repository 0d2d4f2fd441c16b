"""TransHuman's network (Pan et al., ICCV 2023), with the official parameter tree: the state dict of
``TransHumanNet(TransHumanModelConfig())`` has exactly the keys and shapes of the released ``net``.

- ``encoder``: ResNet-18 to layer2 on each reference (3 by default); its stem, layer1 and layer2 maps,
  as if up-sampled to the image size, plus a 1x1 convolution of the colours (``upsample_color``), form
  a 384-channel pixel map; ``reduction_layer`` maps it to 192.
- TransHE: the body's vertices projected into each reference take the 192-channel features (zero
  where the vertex is hidden), are averaged within 300 k-means clusters of the canonical template, and
  a ViT-Tiny (``ViT``; 12 blocks) mixes the 300 tokens, positioned by a sin/cos encoding of the
  clusters' canonical centres.
- DPaRF: a query point's 7 nearest cluster centres of the target-pose body; its offset to each,
  rotated into the cluster's canonical orientation, is encoded (``PE_relative``) and joined to the
  token; a softmax of -distance / 0.5 blends them (255 channels, ``fc_0`` -> 256).
- Each view's pixel feature at the point (``alpha_res_0``) attends across views
  (``spatial_key_value_0/1``); density from their mean (``fc_3``, ``alpha_fc``), colour from the
  views' features, the view direction (``view_fc``) and residual pixel features, averaged (``fc_4``, ``rgb_fc``).

``xyzc_net`` (a sparse-conv net) is built but never called, as in the official code; it is here
because the released file holds it.
"""

from __future__ import annotations

import dataclasses
import json
import math

import torch
import torch.nn.functional as F
from torch import nn

from studio.nerf import PositionalEncoding, ResNet18, SparseConvNet, knn, use_batch_statistics


@dataclasses.dataclass(frozen=True)
class TransHumanModelConfig:
    """Sizes of TransHuman's network; the defaults are the released model's."""

    embed_dim: int = 192
    """Width of the ViT tokens (divisible by 6 and by ``vit_heads``)."""
    vit_depth: int = 12
    """Transformer blocks of the ViT."""
    vit_heads: int = 3
    """Attention heads of the ViT."""
    resnet_width: int = 64
    """Width of the ResNet-18 encoder."""
    color_channels: int = 128
    """Channels of the colour branch of the pixel map."""
    hidden: int = 256
    """Width of the NeRF head."""
    key_dim: int = 128
    """Key width of the cross-view attention."""
    rgb_hidden: int = 128
    """Width of the colour head."""
    knn: int = 7
    """Cluster centres each query point reads (DPaRF)."""
    knn_freqs: int = 10
    """Frequencies of the offset encoding (times pi)."""
    num_clusters: int = 300
    """Clusters of the canonical template (tokens per view)."""
    distance_temperature: float = 0.5
    """DPaRF's blend: softmax(-distance / this)."""
    body_model: str = "smpl"
    """The body model the weights were trained with (the released ones: SMPL)."""

    def __post_init__(self) -> None:
        if self.embed_dim % 6 or self.embed_dim % self.vit_heads:
            raise ValueError(f"embed_dim must be divisible by 6 and by vit_heads, got {self.embed_dim}")
        if self.knn < 1 or self.num_clusters < self.knn:
            raise ValueError("knn must be at least 1 and at most num_clusters")

    @property
    def pixel_dim(self) -> int:
        return 4 * self.resnet_width + self.color_channels

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> TransHumanModelConfig:
        data = json.loads(text)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        return cls(**data)


# --- the ViT -----------------------------------------------------------------------------------------


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head dim)) v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """``ViT``: tokens [B, N, C] plus the sin/cos encoding of their positions (32 frequencies x pi
    for C = 192, no raw input) through pre-norm blocks and a final LayerNorm. ``cls_token`` and
    ``mask_token`` are unused at inference (kept for the state dict)."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.PE = PositionalEncoding(dim // 6, freq_factor=math.pi, include_input=False)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, C], positions [B, N, 3] in [-1, 1] -> [B, N, C]."""
        B, N, C = tokens.shape
        x = tokens + self.PE(positions.reshape(-1, 3)).reshape(B, N, C)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# --- the image encoder -------------------------------------------------------------------------------


class SpatialEncoder(nn.Module):
    """``encoder``: ResNet-18 (``model``; fc and avgpool empty), ``reduction_layer`` and ``upsample_color``."""

    def __init__(self, config: TransHumanModelConfig) -> None:
        super().__init__()
        self.model = ResNet18(width=config.resnet_width, classes=0)
        self.reduction_layer = nn.Conv2d(config.pixel_dim, config.embed_dim, 1)
        self.PE_color = PositionalEncoding(10, freq_factor=math.pi)  # unused, as in the official code
        self.upsample_color = nn.Conv2d(3, config.color_channels, 1)

    def latents(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The stem, layer1 and layer2 maps of images [V, 3, S, S]: [V, w, S/2, S/2], [V, w, S/4,
        S/4], [V, 2w, S/8, S/8]."""
        stem = self.model.stem(images)
        layer1 = self.model.layer1(self.model.pool(stem))
        return [stem, layer1, self.model.layer2(layer1)]

    def pixel_features(self, latents: list[torch.Tensor], images: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """The 384-channel pixel map at pixels ``uv`` [V, N, 2] (official convention), border padding:
        [V, C, N]. Exactly what sampling the official full-size map gives (the latents up-sampled
        bilinearly with align_corners=True, then sampled bilinearly), without building that map."""
        S = images.shape[-1]
        u = uv.clamp(0, S - 1)
        base = u.floor()
        frac = u - base
        parts = [images.new_zeros(images.shape[0], latent.shape[1], uv.shape[1]) for latent in latents]
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            corner = (base + base.new_tensor([dx, dy])).clamp(max=S - 1)
            weight = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])  # [V, N]
            grid = (2 * corner / (S - 1) - 1)[:, :, None, :]  # the same normalised position at every resolution
            for i, latent in enumerate(latents):
                parts[i] += weight[:, None] * F.grid_sample(latent, grid, align_corners=True, padding_mode="border")[..., 0]
        grid = (2 * u / (S - 1) - 1)[:, :, None, :]
        color = F.grid_sample(images, grid, align_corners=True, padding_mode="border")[..., 0]  # [V, 3, N]
        color = torch.einsum("oc,vcn->von", self.upsample_color.weight[:, :, 0, 0], color) + self.upsample_color.bias[None, :, None]
        return torch.cat([*parts, color], 1)

    def reduce(self, pixel: torch.Tensor) -> torch.Tensor:
        """``reduction_layer`` on sampled pixel features [V, 384, N] -> [V, 192, N] (a 1x1
        convolution commutes with bilinear sampling)."""
        return torch.einsum("oc,vcn->von", self.reduction_layer.weight[:, :, 0, 0], pixel) + self.reduction_layer.bias[None, :, None]


class SpatialKeyValue(nn.Module):
    def __init__(self, in_dim: int, key_dim: int, value_dim: int) -> None:
        super().__init__()
        self.key_embed = nn.Conv1d(in_dim, key_dim, 1)
        self.value_embed = nn.Conv1d(in_dim, value_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, L] -> (keys [B, key, L], values [B, value, L]) (kernel-1 convolutions as matrix products)."""
        return linear1(self.key_embed, x), linear1(self.value_embed, x)


def linear1(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d on [B, C, L] as a batched matrix product: [B, C_out, L]."""
    return torch.matmul(conv.weight[:, :, 0], x) + conv.bias[:, None]


@dataclasses.dataclass
class TransHumanReference:
    """What the references give the renderer (computed once)."""

    latents: list[torch.Tensor]  # encoder maps, [V, C_i, h_i, w_i]
    images: torch.Tensor  # [V, 3, S, S]
    K: torch.Tensor  # [V, 3, 3] official convention
    extrinsics: torch.Tensor  # [V, 4, 4]
    tokens: torch.Tensor  # [V, clusters, C] ViT output


class TransHumanNet(nn.Module):
    """``net``: TransHuman's network (see the module docstring)."""

    def __init__(self, config: TransHumanModelConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TransHumanModelConfig()
        self.ViT = VisionTransformer(c.embed_dim, c.vit_depth, c.vit_heads)
        self.encoder = SpatialEncoder(c)
        self.spatial_key_value_0 = SpatialKeyValue(c.hidden, c.key_dim, c.hidden)
        self.spatial_key_value_1 = SpatialKeyValue(c.hidden, c.key_dim, c.hidden)
        w = c.resnet_width
        self.xyzc_net = SparseConvNet(c.embed_dim, (w, w, w, 2 * w, 2 * w))
        self.PE_relative = PositionalEncoding(c.knn_freqs, freq_factor=math.pi)
        self.view_embedder = PositionalEncoding(4, persistent=False)  # NeRF's embedder (a function in the official code)
        h = c.hidden
        self.fc_0 = nn.Conv1d(c.embed_dim + self.PE_relative.d_out, h, 1)
        self.fc_1 = nn.Conv1d(h, h, 1)
        self.fc_2 = nn.Conv1d(h, h, 1)
        self.alpha_fc = nn.Conv1d(h, 1, 1)
        self.feature_fc = nn.Conv1d(h, h, 1)
        self.view_fc = nn.Conv1d(h + self.view_embedder.d_out, c.rgb_hidden, 1)
        self.rgb_fc = nn.Conv1d(c.rgb_hidden, 3, 1)
        self.fc_3 = nn.Conv1d(h, h, 1)
        self.fc_4 = nn.Conv1d(c.rgb_hidden, c.rgb_hidden, 1)
        self.alpha_res_0 = nn.Conv1d(c.pixel_dim, h, 1)
        self.rgb_res_0 = nn.Conv1d(c.pixel_dim, h, 1)
        self.rgb_res_1 = nn.Conv1d(c.pixel_dim, c.rgb_hidden, 1)

    # --- references ------------------------------------------------------------------------------

    def encode_references(
        self, images: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor, vertices: torch.Tensor, visible: torch.Tensor,
        clusters: torch.Tensor, centres: torch.Tensor, *, batch_statistics: bool = True,
    ) -> TransHumanReference:  # fmt: skip
        """Paint the body with each reference's features and run TransHE.

        Args:
            images: [V, 3, S, S] in [0, 1], background black; K: [V, 3, 3] official convention; extrinsics: [V, 4, 4].
            vertices: [V, Vb, 3] each reference's fitted body, posed (world); visible: [V, Vb] bool (seen by its camera).
            clusters: [Vb] long cluster of each vertex; centres: [clusters, 3] canonical cluster centres.
            batch_statistics: the encoder's BatchNorms use the references' batch (the official evaluation).
        """
        with use_batch_statistics(self.encoder, batch_statistics):
            latents = self.encoder.latents(images)
        uv = project_views(vertices, K, extrinsics)  # [V, Vb, 2]
        holder = self.encoder.reduce(self.encoder.pixel_features(latents, images, uv)).transpose(1, 2)  # [V, Vb, C]
        holder = holder * visible[..., None].to(holder)
        n = centres.shape[0]
        summed = holder.new_zeros(holder.shape[0], n, holder.shape[2]).index_add(1, clusters, holder)
        counts = torch.bincount(clusters, minlength=n).clamp_min(1).to(holder)
        grouped = summed / counts[None, :, None]
        positions = (centres / 1.5)[None].expand(images.shape[0], -1, -1)  # the official [-1.5, 1.5] box to [-1, 1]
        tokens = self.ViT(grouped, positions)
        return TransHumanReference(latents, images, K, extrinsics, tokens)

    # --- query points ----------------------------------------------------------------------------

    def query(
        self, ref: TransHumanReference, points: torch.Tensor, view_dirs: torch.Tensor, centres: torch.Tensor, rotations: torch.Tensor,
        observed: torch.Tensor, *, skip_empty: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Density and colour at world points.

        Args:
            points: [N, 3] world, target pose; view_dirs: [N, 3] unit ray directions.
            centres: [clusters, 3] the target body's cluster centres (world); rotations: [clusters, 3, 3]
                their mean blended rotations (canonical -> world).
            observed: [V, N, 3] the points in each reference's pose (the points themselves when the
                reference shows the target pose), where their pixel features are read.
            skip_empty: colours only where the density is positive (the official inference; zeros elsewhere).
        Returns:
            sigma [N] raw; rgb [N, 3] raw (a sigmoid makes the colour).
        """
        c = self.config
        V = ref.images.shape[0]
        dist, idx = knn(points, centres, c.knn)  # [N, k]
        weights = torch.softmax(-dist / c.distance_temperature, dim=1)
        offset = points[:, None] - centres[idx]  # [N, k, 3]
        local = torch.einsum("nki,nkij->nkj", offset, rotations[idx])  # row vector times the rotation, as the official code
        encoded = self.PE_relative(local.reshape(-1, 3)).reshape(*idx.shape, -1)  # [N, k, 63]
        tokens = ref.tokens[:, idx]  # [V, N, k, C]
        human = torch.einsum("nk,vnkc->vcn", weights, tokens)
        human = torch.cat([human, torch.einsum("nk,nkc->cn", weights, encoded)[None].expand(V, -1, -1)], 1)  # [V, 255, N]
        uv = project_views(observed, ref.K, ref.extrinsics)
        pixel = self.encoder.pixel_features(ref.latents, ref.images, uv)  # [V, 384, N]
        inter = self._aggregate(human, pixel)
        sigma = linear1(self.alpha_fc, F.relu(linear1(self.fc_3, inter.mean(0, keepdim=True))))[0, 0]
        if not skip_empty:
            return sigma, self._colour(inter, pixel, view_dirs)
        rgb = points.new_zeros(points.shape[0], 3)
        solid = (sigma > 0).nonzero()[:, 0]
        if len(solid):
            rgb[solid] = self._colour(inter[..., solid], pixel[..., solid], view_dirs[solid])
        return sigma, rgb

    def _aggregate(self, human: torch.Tensor, pixel: torch.Tensor) -> torch.Tensor:
        """The cross-view attention: body features query the views' pixel features: [V, hidden, N]."""
        ske = F.relu(linear1(self.fc_0, human))
        pix = F.relu(linear1(self.alpha_res_0, pixel))
        key, value = self.spatial_key_value_0(pix)  # [V, key, N], [V, hidden, N]
        q_key, q_value = self.spatial_key_value_1(ske)
        attn = torch.softmax(torch.einsum("kcn,qcn->nkq", key, q_key) / math.sqrt(key.shape[1]), dim=1)  # per point, over the key views
        net = q_value + torch.einsum("kcn,nkq->qcn", value, attn)
        return F.relu(linear1(self.fc_2, F.relu(linear1(self.fc_1, net))))

    def _colour(self, inter: torch.Tensor, pixel: torch.Tensor, view_dirs: torch.Tensor) -> torch.Tensor:
        V = inter.shape[0]
        features = linear1(self.feature_fc, inter) + linear1(self.rgb_res_0, pixel)
        views = self.view_embedder(view_dirs).T[None].expand(V, -1, -1)
        net = F.relu(linear1(self.view_fc, torch.cat([features, views], 1))) + linear1(self.rgb_res_1, pixel)
        net = F.relu(linear1(self.fc_4, net.mean(0, keepdim=True)))
        return linear1(self.rgb_fc, net)[0].T


def project_views(points: torch.Tensor, K: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """World points [V, N, 3] (each view's own) in each view: pixels [V, N, 2] (official convention)."""
    cam = torch.einsum("vij,vnj->vni", extrinsics[:, :3, :3], points) + extrinsics[:, None, :3, 3]
    uvw = torch.einsum("vij,vnj->vni", K, cam)
    return uvw[..., :2] / uvw[..., 2:]


def build_net(config: TransHumanModelConfig | None = None, *, seed: int | None = None, density_bias: float = 1.0) -> TransHumanNet:
    """A TransHuman network with random weights to train from (seeded when ``seed`` is given), its
    density's bias positive so that ReLU densities start with a gradient."""
    if seed is not None:
        torch.manual_seed(seed)
    net = TransHumanNet(config)
    with torch.no_grad():
        net.alpha_fc.bias.fill_(density_bias)
    return net


def kmeans(points: torch.Tensor, k: int, *, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding (seeded, so the clusters repeat): labels [N] long.
    Stands in for TransHuman's released clustering of the SMPL template when that file is absent."""
    g = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(len(points), (1,), generator=g)]
    for _ in range(k - 1):
        d = torch.cdist(points, centres).amin(1) ** 2
        centres = torch.cat([centres, points[torch.multinomial(d / d.sum(), 1, generator=g)]])
    labels = torch.zeros(len(points), dtype=torch.long)
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add(0, labels, points)
        counts = torch.bincount(labels, minlength=k)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        if torch.allclose(moved, centres):
            break
        centres = moved
    return torch.cdist(points, centres).argmin(1)


def cluster_means(values: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cluster means of per-vertex values [V, ...] -> [k, ...] (empty clusters: zero)."""
    flat = values.reshape(values.shape[0], -1)
    summed = flat.new_zeros(k, flat.shape[1]).index_add(0, labels, flat)
    counts = torch.bincount(labels, minlength=k).clamp_min(1).to(flat)
    return (summed / counts[:, None]).reshape(k, *values.shape[1:])


# Network sizes for training from scratch: "full" is the released model's.
MODEL_SIZES: dict[str, TransHumanModelConfig] = {
    "tiny": TransHumanModelConfig(embed_dim=24, vit_depth=2, resnet_width=8, color_channels=16, hidden=32, key_dim=16, rgb_hidden=16, num_clusters=20),
    "small": TransHumanModelConfig(embed_dim=48, vit_depth=4, resnet_width=16, color_channels=32, hidden=64, key_dim=32, rgb_hidden=32, num_clusters=100),
    "full": TransHumanModelConfig(),
}
