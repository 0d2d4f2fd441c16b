"""``SherfPipeline``: a person from one photo rendered from new viewpoints and in new poses.

Per photo (once): the reference is cropped square around the person and resized to 512 with a black
background; the body fitted to it gives the vertices whose pixel features fill SHERF's sparse volume
(vertices facing the camera only), and the global code gives the tri-plane. Per target frame: rays
through every pixel, 48 evenly spaced samples within the target body's box (+-5 cm), and only samples
within 5 cm of a body vertex evaluated. Each such sample is moved to the canonical big pose by the
skinning of its nearest vertex (pose correctives and the shape taken off), and from there into the
reference's pose for its pixel feature; NeRF's quadrature on nerfacc composites them over black.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from studio.errors import StudioError
from studio.nerf import (
    NerfTasks,
    PosedBody,
    Sampling,
    VertexGrid,
    body_params,
    canonical_body,
    facing_vertices,
    match_body_model,
    photo_key,
    pick_device,
    posed_body,
    reference_view,
    render_frames,
    use_batch_statistics,
    warp,
    warp_rotations,
)
from studio.pipeline import PipelineBase

from .model import SherfGenerator, SherfReference
from .weights import DATASETS, SOURCE, body_model_for, load_generator, weights_status

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SherfConfig:
    """Rendering settings (the defaults are SHERF's evaluation)."""

    dataset: Literal["auto", "RenderPeople", "THuman", "HuMMan", "zju_mocap"] = "auto"
    """Which released checkpoint to load when the folder holds several ("auto": the first of
    RenderPeople, THuman, HuMMan, zju_mocap found)."""
    samples: int = 48
    """Evenly spaced samples per ray within the target body's box."""
    radius: float = 0.05
    """Only samples within this many metres of a body vertex are evaluated."""
    reference_size: int = 512
    """Side of the square crop of the photo the networks see."""
    noise: Literal["const", "random", "none"] = "const"
    """StyleGAN's noise in the tri-plane generator: the stored noise, fresh noise from --seed, or none."""
    batchnorm: Literal["running", "batch"] = "running"
    """BatchNorm statistics of the encoders: the stored running ones, or the reference's own."""
    sparse_backend: Literal["auto", "torch", "spconv"] = "auto"
    """Sparse convolution: spconv's kernels when installed ("auto"), or studio's torch code."""
    background: Literal["black", "white"] = "black"
    """The colour behind the person (SHERF renders on black)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the networks run ("auto": CUDA when available)."""

    def __post_init__(self) -> None:
        if not 2 <= self.samples <= 1024:
            raise ValueError(f"samples must be 2-1024, got {self.samples}")
        if not (np.isfinite(self.radius) and 0.005 <= self.radius <= 0.5):
            raise ValueError(f"radius must be 0.005-0.5 metres, got {self.radius}")
        if not 64 <= self.reference_size <= 2048:
            raise ValueError(f"reference_size must be 64-2048, got {self.reference_size}")


class SherfPipeline(NerfTasks, PipelineBase):
    """SHERF: a generalizable human NeRF from one image (Hu et al., ICCV 2023), loading the released weights."""

    name = "sherf"
    tasks = ("novel_view", "animate")
    Config = SherfConfig
    required_conditions = ("references", "reference_conditions", "target", "reference", "reference_condition", "motion")
    optional_conditions = ("reference_masks", "reference_mask")
    needs_gpu = True  # runs on a CPU too, at seconds per frame (benchmarks/nerf_render.py)
    chunk_frames = 8
    weights_help = SOURCE
    body_model: ClassVar[str] = "smpl"  # what the released weights were trained on; see body_model_for

    def __init__(self, generator: SherfGenerator, config: SherfConfig | None = None) -> None:
        self.config = config or SherfConfig()
        self.device = pick_device(self.config.device)
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        self._canonical: dict[str, tuple[PosedBody, VertexGrid]] = {}
        self._encoded: tuple[str, SherfReference] | None = None

    @property
    def body_model_name(self) -> str:
        """The body model these weights need."""
        return self.generator.config.body_model

    @classmethod
    def weights_status(cls, root: Path | None) -> tuple[bool, str]:
        return weights_status(root)

    @classmethod
    def body_model_for(cls, root: Path | None, config: SherfConfig | None = None) -> str:
        """The body model the references must be fitted with for the weights in ``root`` (reads no
        weights): "smpl" for the released files, the recorded one for studio-trained weights."""
        return body_model_for(root, (config or SherfConfig()).dataset)

    @classmethod
    def load(cls, weights: Path | None, config: SherfConfig) -> SherfPipeline:
        if weights is None:
            raise StudioError(f"sherf: {weights_status(None)[1]}")
        if config.dataset != "auto" and config.dataset not in DATASETS:
            raise StudioError(f"sherf: unknown dataset '{config.dataset}'")
        generator, _ = load_generator(weights, config.dataset)
        return cls(generator, config)

    def render(
        self, references: list[np.ndarray], masks: list[np.ndarray] | None, conditions: list[Any], target: Any, size: tuple[int, int],
        *, body_model: Any, seed: int = 0, on_progress=None,
    ) -> np.ndarray:  # fmt: skip
        """The target's frames [T, H, W, 3] uint8 of the person in ``references[0]`` (SHERF reads one photo)."""
        if not references or not conditions:
            raise StudioError("sherf needs a reference photo and the body fitted to it")
        if len(references) > 1:
            logger.info("sherf reads one photo; using the first of %d", len(references))
        model, conditions, target = match_body_model(body_model, self.body_model_name, conditions[:1], target)
        canonical, grid = self.canonical(model)
        mask = None if masks is None else masks[0]
        key = photo_key([references[0]] + ([] if mask is None else [mask]), conditions[:1], model.name, seed)
        if self._encoded is None or self._encoded[0] != key:  # animate calls once per chunk with the same photo
            self._encoded = (key, self.encode(references[0], mask, conditions[0], body_model=model, seed=seed))
        reference = self._encoded[1]
        ref_body = posed_body(model, body_params(conditions[0])).to(self.device)

        def make_field(body: PosedBody):
            return sherf_field(self.generator, reference, body, canonical, ref_body, grid)

        sampling = Sampling(self.config.samples, self.config.radius, (0.05, 0.05, 0.05))
        background = 1.0 if self.config.background == "white" else 0.0
        return render_frames(target, size, model, make_field, sampling=sampling, background=background, device=self.device, on_progress=on_progress)

    # --- pieces (also used by train.py) ----------------------------------------------------------

    def canonical(self, body_model: Any) -> tuple[PosedBody, VertexGrid]:
        """The canonical big-pose body (neutral shape) and a nearest-vertex grid of it (cached)."""
        if body_model.name not in self._canonical:
            body = canonical_body(body_model).to(self.device)
            self._canonical[body_model.name] = (body, VertexGrid(body.vertices, cell=self.config.radius))
        return self._canonical[body_model.name]

    @torch.no_grad()
    def encode(self, image: np.ndarray, mask: np.ndarray | None, condition: Any, *, body_model: Any, seed: int = 0) -> SherfReference:
        """What one photo gives the renderer (``SherfGenerator.encode_reference`` on the crop)."""
        canonical, _ = self.canonical(body_model)
        return encode_photo(self.generator, image, mask, condition, body_model=body_model, canonical=canonical, config=self.config, seed=seed, device=self.device)

    def close(self) -> None:
        self._canonical.clear()
        self._encoded = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def encode_photo(
    generator: SherfGenerator, image: np.ndarray, mask: np.ndarray | None, condition: Any, *, body_model: Any, canonical: PosedBody,
    config: SherfConfig, seed: int = 0, device: torch.device | str = "cpu", body: PosedBody | None = None,
) -> SherfReference:  # fmt: skip
    """Crop the photo, find the vertices facing its camera and encode it (differentiable when grads are on).

    Args:
        canonical: the body model's canonical big-pose body (``canonical_body``).
        body: the photo's posed body when already known (else posed from ``condition``).
    """
    view = reference_view(image, mask, condition, size=config.reference_size, body_model=body_model)
    body = (body or posed_body(body_model, body_params(condition))).to("cpu")
    visible = facing_vertices(body.vertices, body_model.faces.to(body.vertices.device), view.extrinsics)
    generator_rng = torch.Generator().manual_seed(seed)
    with use_batch_statistics(generator, config.batchnorm == "batch"):
        return generator.encode_reference(
            view.image[None].to(device), view.K.to(device), view.extrinsics.to(device), body.vertices.to(device), visible.to(device),
            canonical.vertices.to(device), noise_mode=config.noise, generator=generator_rng, backend=config.sparse_backend,
        )  # fmt: skip


def sherf_field(generator: SherfGenerator, reference: SherfReference, target: PosedBody, canonical: PosedBody, ref_body: PosedBody, grid: VertexGrid):
    """SHERF's field for one target body: a sample is carried to the canonical pose by the skinning of
    its nearest target vertex, and from there into the reference's pose by the skinning of its
    nearest canonical vertex (``grid`` over the canonical vertices); view directions turn with the
    first warp (not normalised, as in the official code). Returns (points [N, 3], ray directions
    [N, 3], nearest target vertex [N]) -> (raw sigma [N], rgb [N, 3])."""

    def field(points: torch.Tensor, directions: torch.Tensor, nearest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = warp(points, nearest, target, canonical)
        dirs = torch.einsum("nij,nj->ni", warp_rotations(nearest, target, canonical), directions)
        _, near_canonical = grid.nearest_exact(c.detach())
        observed = warp(c, near_canonical, canonical, ref_body)
        return generator.query(reference, c, dirs, observed)

    return field
