"""``TransHumanPipeline``: a person from a few photos (3 by default, 1 works) rendered from new
viewpoints and in new poses.

Per set of photos (once): each is cropped square around the person, resized to 512, background black;
the ResNet runs on the batch of references in train mode (BatchNorm on the references' statistics, as
the official evaluation does); each reference's fitted body is painted with its features where the
camera sees it (a rasterised depth test), averaged over 300 k-means clusters of the canonical
template and mixed by the ViT. Per target frame: rays through every pixel, 64 evenly spaced samples in
the target body's box (+-5 cm vertically), only samples within 10 cm of a vertex evaluated: DPaRF
reads the 7 nearest cluster tokens, each view's pixel feature is read where the point lies in that
reference (moved into the reference's pose by nearest-vertex skinning when the poses differ; the
official code renders the references' own pose), and NeRF's quadrature on nerfacc composites over black.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from studio.camera import Camera
from studio.errors import StudioError
from studio.nerf import (
    NerfTasks,
    PosedBody,
    ReferenceView,
    Sampling,
    blend,
    body_params,
    canonical_body,
    match_body_model,
    photo_key,
    pick_device,
    posed_body,
    reference_view,
    render_frames,
    seen_vertices,
    warp,
)
from studio.pipeline import PipelineBase

from .model import TransHumanNet, TransHumanReference, cluster_means, kmeans
from .weights import SOURCE, body_model_for, load_net, read_clusters, weights_status

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TransHumanConfig:
    """Rendering settings (the defaults are TransHuman's evaluation)."""

    references: int = 3
    """At most this many photos are read (the first ones given)."""
    samples: int = 64
    """Evenly spaced samples per ray within the target body's box."""
    radius: float = 0.1
    """Only samples within this many metres of a body vertex are evaluated."""
    reference_size: int = 512
    """Side of the square crop of each photo the networks see."""
    batchnorm: Literal["batch", "running"] = "batch"
    """BatchNorm statistics of the encoder: the references' own (the official evaluation runs the
    network in train mode), or the stored running ones."""
    background: Literal["black", "white"] = "black"
    """The colour behind the person (TransHuman renders on black)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the network runs ("auto": CUDA when available)."""

    def __post_init__(self) -> None:
        if not 1 <= self.references <= 16:
            raise ValueError(f"references must be 1-16, got {self.references}")
        if not 2 <= self.samples <= 1024:
            raise ValueError(f"samples must be 2-1024, got {self.samples}")
        if not (np.isfinite(self.radius) and 0.01 <= self.radius <= 0.5):
            raise ValueError(f"radius must be 0.01-0.5 metres, got {self.radius}")
        if not 64 <= self.reference_size <= 2048:
            raise ValueError(f"reference_size must be 64-2048, got {self.reference_size}")


@dataclasses.dataclass
class Clusters:
    """The canonical template's clusters for one body model."""

    labels: torch.Tensor  # [V] long
    centres: torch.Tensor  # [k, 3] canonical (T-pose, neutral shape) centres


class TransHumanPipeline(NerfTasks, PipelineBase):
    """TransHuman: a generalizable human NeRF from a few images (Pan et al., ICCV 2023), loading the released weights."""

    name = "transhuman"
    tasks = ("novel_view", "animate")
    Config = TransHumanConfig
    required_conditions = ("references", "reference_conditions", "target", "reference", "reference_condition", "motion")
    optional_conditions = ("reference_masks", "reference_mask")
    needs_gpu = True  # runs on a CPU too, at a minute or so per 512 frame (benchmarks/nerf_render.py)
    chunk_frames = 8
    weights_help = SOURCE
    body_model: ClassVar[str] = "smpl"  # what the released weights were trained on; see body_model_for

    def __init__(self, net: TransHumanNet, config: TransHumanConfig | None = None, *, labels: torch.Tensor | None = None) -> None:
        self.config = config or TransHumanConfig()
        self.device = pick_device(self.config.device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.labels = labels  # the clustering that came with the weights (None: studio clusters the template)
        self._clusters: dict[str, Clusters] = {}
        self._encoded: tuple[str, tuple[TransHumanReference, list[PosedBody]]] | None = None

    @property
    def body_model_name(self) -> str:
        return self.net.config.body_model

    @classmethod
    def weights_status(cls, root: Path | None) -> tuple[bool, str]:
        return weights_status(root)

    @classmethod
    def body_model_for(cls, root: Path | None, config: TransHumanConfig | None = None) -> str:
        """The body model the references must be fitted with for the weights in ``root`` (reads no weights)."""
        return body_model_for(root)

    @classmethod
    def load(cls, weights: Path | None, config: TransHumanConfig) -> TransHumanPipeline:
        if weights is None:
            raise StudioError(f"transhuman: {weights_status(None)[1]}")
        net, path = load_net(weights)
        from studio.body import load_body_model

        try:
            vertices = load_body_model(net.config.body_model).num_vertices
        except StudioError:
            vertices = 6890 if net.config.body_model == "smpl" else -1
        labels = read_clusters(weights, vertices, net.config.num_clusters) if vertices > 0 else None
        if labels is None and path.suffix == ".pth":
            logger.warning("transhuman: no kmeans_dict_%d.npy beside %s; clustering the template with studio's k-means, "
                           "which differs from the release's", net.config.num_clusters, path)  # fmt: skip
        return cls(net, config, labels=labels)

    def render(
        self, references: list[np.ndarray], masks: list[np.ndarray] | None, conditions: list[Any], target: Any, size: tuple[int, int],
        *, body_model: Any, seed: int = 0, on_progress=None,
    ) -> np.ndarray:  # fmt: skip
        """The target's frames [T, H, W, 3] uint8 of the person in (the first ``config.references``)
        photos (deterministic: ``seed`` is unused)."""
        if not references or not conditions or len(references) != len(conditions):
            raise StudioError("transhuman needs one or more reference photos, each with the body fitted to it")
        n = min(len(references), self.config.references)
        if len(references) > n:
            logger.info("transhuman reads %d photos; using the first %d of %d", n, n, len(references))
        model, conditions, target = match_body_model(body_model, self.body_model_name, conditions[:n], target)
        photos = [(references[i], None if masks is None else masks[i], conditions[i]) for i in range(n)]
        key = photo_key([p[0] for p in photos] + [p[1] for p in photos if p[1] is not None], conditions, model.name)
        if self._encoded is None or self._encoded[0] != key:  # animate calls once per chunk with the same photos
            self._encoded = (key, self.encode(photos, body_model=model))
        reference, ref_bodies = self._encoded[1]
        clusters = self.clusters(model)

        def make_field(body: PosedBody):
            return transhuman_field(self.net, reference, body, ref_bodies, clusters)

        sampling = Sampling(self.config.samples, self.config.radius, (0.0, 0.05, 0.0))
        background = 1.0 if self.config.background == "white" else 0.0
        return render_frames(target, size, model, make_field, sampling=sampling, background=background, device=self.device, on_progress=on_progress)

    # --- pieces (also used by train.py) ----------------------------------------------------------

    def clusters(self, body_model: Any) -> Clusters:
        """The canonical template's clusters for ``body_model`` (cached)."""
        if body_model.name not in self._clusters:
            self._clusters[body_model.name] = template_clusters(body_model, self.net.config.num_clusters, self.labels)
        c = self._clusters[body_model.name]
        return Clusters(c.labels.to(self.device), c.centres.to(self.device))

    @torch.no_grad()
    def encode(self, photos: list[tuple[np.ndarray, np.ndarray | None, Any]], *, body_model: Any) -> tuple[TransHumanReference, list[PosedBody]]:
        return encode_photos(self.net, photos, body_model=body_model, clusters=self.clusters(body_model), config=self.config, device=self.device)

    def close(self) -> None:
        self._clusters.clear()
        self._encoded = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def template_clusters(body_model: Any, k: int, labels: torch.Tensor | None = None) -> Clusters:
    """Clusters of the body model's neutral T-pose: the given labels when they fit its vertices,
    else studio's seeded k-means."""
    rest = canonical_body(body_model, pose="t").vertices
    if labels is None or labels.shape[0] != rest.shape[0]:
        labels = kmeans(rest, k)
    return Clusters(labels, cluster_means(rest, labels, k))


def encode_photos(
    net: TransHumanNet, photos: list[tuple[np.ndarray, np.ndarray | None, Any]], *, body_model: Any, clusters: Clusters,
    config: TransHumanConfig, device: torch.device | str = "cpu", known: Callable[[int], tuple[PosedBody, torch.Tensor] | None] | None = None,
) -> tuple[TransHumanReference, list[PosedBody]]:  # fmt: skip
    """Crop the photos, find the vertices each camera sees and run TransHE (differentiable when grads are on).

    Args:
        known: photo index -> (its posed body, its visible vertices) when already known (training caches them).
    """
    views, bodies, visible = [], [], []
    for i, (image, mask, condition) in enumerate(photos):
        view = reference_view(image, mask, condition, size=config.reference_size, body_model=body_model)
        cached = known(i) if known else None
        if cached is None:
            cached = (posed_body(body_model, body_params(condition)), photo_visibility(view, condition, body_model))
        views.append(view)
        bodies.append(cached[0].to(device))
        visible.append(cached[1])
    images = torch.stack([v.image for v in views]).to(device)
    K = torch.stack([v.K for v in views]).to(device)
    E = torch.stack([v.extrinsics for v in views]).to(device)
    vertices = torch.stack([b.vertices for b in bodies])
    reference = net.encode_references(
        images, K, E, vertices, torch.stack(visible).to(device), clusters.labels, clusters.centres, batch_statistics=config.batchnorm == "batch"
    )
    return reference, bodies


def photo_visibility(view: ReferenceView, condition: Any, body_model: Any) -> torch.Tensor:
    """The vertices the crop's camera sees (a rasterised depth test): [V] bool."""
    K = view.K.clone()
    K[:2, 2] += 0.5  # back to studio's convention for the rasteriser
    crop = dataclasses.replace(condition[0], camera=Camera(K=K[None], extrinsics=view.extrinsics[None], image_size=(view.size, view.size)))
    return seen_vertices(crop, body_model)


def transhuman_field(net: TransHumanNet, reference: TransHumanReference, target: PosedBody, ref_bodies: list[PosedBody], clusters: Clusters, *, skip_empty: bool = True):
    """TransHuman's field for one target body: DPaRF over the target's cluster centres and mean
    blended rotations; pixel features where each point lies in each reference's pose."""
    k = clusters.centres.shape[0]
    centres = cluster_means(target.vertices, clusters.labels, k)
    rotations = cluster_means(blend(target, torch.arange(target.vertices.shape[0], device=target.vertices.device))[..., :3], clusters.labels, k)

    def field(points: torch.Tensor, directions: torch.Tensor, nearest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        observed = torch.stack([warp(points, nearest, target, body) for body in ref_bodies])
        sigma, rgb = net.query(reference, points, F.normalize(directions, dim=-1), centres, rotations, observed, skip_empty=skip_empty)
        return sigma, torch.sigmoid(rgb)

    return field
