"""Score distillation of the object, threestudio-style, when an image diffusion model is in a local
folder (diffusers layout): Stable Diffusion 1.5/2.1 (latent space, CLIP text) or DeepFloyd IF stage I
(pixel space at 64x64, T5 text).

The object becomes a voxel radiance field around its placed mesh (density and colour on a grid,
trilinear, volume-rendered by plain torch ray marching): density starts from the object's signed
distance, colour from its parts. Each step renders the field from a random camera and follows the
score-distillation gradient of InterFusion's object prompt ("a photo of a chair, 8K, HD"), plus
InterFusion's penetration term (object density inside the body, with its scheduled weight
0.001 -> 0.01 -> 0.1 -> 0.01 -> 0.001 over the run) and a pull to the initial density. The mesh then
takes its vertex colours from the field, and each vertex moves along its normal (at most
``MAX_OFFSET``) to where the field's occupancy crosses one half.

It runs on a CUDA GPU in half precision when there is one; the CPU path is the same code in float32
(tested with tiny random components).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import trimesh

from pipelines.interfusion.objects import ObjectModel
from studio.errors import StudioError

logger = logging.getLogger(__name__)

MAX_OFFSET = 0.02  # metres a mesh vertex may move
GRID = 48


def find_diffusion_folder(explicit: Path | None, weights: Path | None) -> Path | None:
    """The diffusers folder to distil from: ``explicit`` (sds_weights), else ``weights/sds``, else
    ``weights`` itself, whichever holds a model_index.json naming a Stable Diffusion or IF pipeline."""
    for folder in ([Path(explicit)] if explicit is not None else []) + (
        [Path(weights) / "sds", Path(weights)] if weights is not None else []
    ):
        index = folder / "model_index.json"
        if index.is_file():
            try:
                kind = json.loads(index.read_text()).get("_class_name", "")
            except (OSError, ValueError):
                continue
            if kind.startswith(("StableDiffusion", "IF")):
                return folder
    return None


class ScoreDistillation:
    """A diffusion model as a score-distillation guide: ``encode_prompt`` and ``loss``."""

    def __init__(self, folder: Path) -> None:
        from diffusers import DDPMScheduler, UNet2DConditionModel

        self.folder = Path(folder)
        self.kind = json.loads((self.folder / "model_index.json").read_text())["_class_name"]
        self.latent = self.kind.startswith("StableDiffusion")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        try:
            self.unet = UNet2DConditionModel.from_pretrained(
                self.folder, subfolder="unet", local_files_only=True, torch_dtype=self.dtype
            )
            self.scheduler = DDPMScheduler.from_pretrained(self.folder, subfolder="scheduler", local_files_only=True)
            if self.latent:
                from diffusers import AutoencoderKL
                from transformers import CLIPTextModel, CLIPTokenizer

                self.vae = AutoencoderKL.from_pretrained(
                    self.folder, subfolder="vae", local_files_only=True, torch_dtype=self.dtype
                ).to(self.device)
                self.tokenizer = CLIPTokenizer.from_pretrained(self.folder, subfolder="tokenizer", local_files_only=True)
                self.text_encoder = CLIPTextModel.from_pretrained(
                    self.folder, subfolder="text_encoder", local_files_only=True, torch_dtype=self.dtype
                )
            else:
                from transformers import T5EncoderModel, T5Tokenizer

                self.vae = None
                self.tokenizer = T5Tokenizer.from_pretrained(self.folder, subfolder="tokenizer", local_files_only=True)
                self.text_encoder = T5EncoderModel.from_pretrained(
                    self.folder, subfolder="text_encoder", local_files_only=True, torch_dtype=self.dtype
                )
        except (OSError, ValueError) as exc:
            raise StudioError(f"{self.folder}: not a loadable {self.kind} folder ({str(exc).splitlines()[0][:160]})") from None
        self.unet.to(self.device).eval().requires_grad_(False)
        self.text_encoder.to(self.device).eval().requires_grad_(False)
        if self.vae is not None:
            self.vae.eval().requires_grad_(False)
        self.alphas = self.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.guidance_scale = 100.0 if self.latent else 20.0  # threestudio's and InterFusion's defaults
        self.size = (
            (self.unet.config.sample_size * (2 ** (len(self.vae.config.block_out_channels) - 1)))
            if self.latent
            else self.unet.config.sample_size
        )

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """[2, L, D] text embeddings: the empty prompt, then ``prompt``."""
        max_length = min(getattr(self.tokenizer, "model_max_length", 77), 77)
        tokens = self.tokenizer(["", prompt], padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return self.text_encoder(tokens.input_ids.to(self.device))[0]

    def loss(self, images: torch.Tensor, embeddings: torch.Tensor, *, generator: torch.Generator, t_range: tuple[float, float] = (0.02, 0.98),
             guidance_scale: float | None = None) -> torch.Tensor:  # fmt: skip
        """The score-distillation loss of images [B, 3, H, W] in [0, 1]: its gradient with respect to
        the images is w(t) (eps_hat - eps) pushed back through the encoder (uniform weighting)."""
        scale = self.guidance_scale if not guidance_scale else guidance_scale
        x = torch.nn.functional.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False).to(
            self.device, self.dtype
        )
        if self.latent:
            x = self.vae.encode(x * 2 - 1).latent_dist.sample(generator=None) * self.vae.config.scaling_factor
        else:
            x = x * 2 - 1
        T = self.scheduler.config.num_train_timesteps
        low, high = int(t_range[0] * T), int(t_range[1] * T)
        t = torch.randint(low, high + 1, (x.shape[0],), generator=generator).to(self.device)
        noise = torch.randn(x.shape, generator=generator).to(self.device, self.dtype)
        with torch.no_grad():
            noisy = self.scheduler.add_noise(x, noise, t)
            cond = embeddings.repeat_interleave(x.shape[0], dim=0)  # [uncond x B, cond x B]
            out = self.unet(torch.cat([noisy] * 2), torch.cat([t] * 2), encoder_hidden_states=cond).sample
            out = out[:, : x.shape[1]]  # IF predicts the variance too
            uncond, text = out.chunk(2)
            eps = uncond + scale * (text - uncond)
        w = (1 - self.alphas[t]).view(-1, 1, 1, 1)
        grad = torch.nan_to_num(w * (eps - noise).float())
        target = (x.float() - grad).detach()
        return 0.5 * torch.nn.functional.mse_loss(x.float(), target, reduction="sum") / x.shape[0]


def load_guidance(folder: Path) -> ScoreDistillation:
    """The diffusion model of a folder found by ``find_diffusion_folder``."""
    return ScoreDistillation(folder)


@dataclasses.dataclass
class VoxelField:
    """Density (softplus of ``raw``) and colour (sigmoid of ``logits``) on a grid over [lo, hi]."""

    raw: torch.Tensor  # [R, R, R]
    logits: torch.Tensor  # [3, R, R, R]
    lo: torch.Tensor  # [3]
    hi: torch.Tensor  # [3]

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [N, 3] -> density [N], colour [N, 3] (zero density outside the grid)."""
        unit = ((points - self.lo) / (self.hi - self.lo) * 2 - 1).flip(-1)[None, :, None, None]
        grid = torch.cat([self.raw[None], self.logits])[None]
        sampled = torch.nn.functional.grid_sample(grid, unit, mode="bilinear", padding_mode="zeros", align_corners=True)[
            0, :, :, 0, 0
        ]
        inside = ((points >= self.lo) & (points <= self.hi)).all(-1)
        return torch.nn.functional.softplus(sampled[0]) * inside, torch.sigmoid(sampled[1:]).T

    def centres(self) -> torch.Tensor:
        R = self.raw.shape[0]
        axes = [torch.linspace(float(self.lo[k]), float(self.hi[k]), R) for k in range(3)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def occupancy(density: torch.Tensor) -> torch.Tensor:
    """InterFusion's occupancy of a density: 1 - exp(-0.2 sigma)."""
    return 1 - torch.exp(-0.2 * density)


def field_from_object(mesh: trimesh.Trimesh, sdf, colors: np.ndarray, *, resolution: int = GRID) -> VoxelField:
    """A field around a placed object: density high inside (softplus^-1 of 50 at sdf <= -1 cm, falling
    to ~0 at +1 cm), colour from the nearest mesh vertex's colour."""
    from scipy.spatial import cKDTree

    lo, hi = mesh.bounds
    pad = 0.06 + 0.05 * (hi - lo).max()
    lo, hi = torch.tensor(lo - pad, dtype=torch.float32), torch.tensor(hi + pad, dtype=torch.float32)
    field = VoxelField(
        torch.zeros(resolution, resolution, resolution), torch.zeros(3, resolution, resolution, resolution), lo, hi
    )
    points = field.centres()
    with torch.no_grad():
        d = sdf(points)
    density = 50.0 * torch.sigmoid(-d / 0.004)
    raw = torch.where(density > 20, density, torch.log(torch.expm1(density.clamp_min(1e-4))))
    _, nearest = cKDTree(mesh.vertices).query(points.numpy())
    rgb = torch.as_tensor(colors[nearest][:, :3] / 255.0, dtype=torch.float32).clamp(0.02, 0.98)
    field.raw = raw.reshape(resolution, resolution, resolution)
    field.logits = torch.logit(rgb).T.reshape(3, resolution, resolution, resolution)
    return field


def render_field(field: VoxelField, camera, *, samples: int = 48, generator: torch.Generator | None = None) -> torch.Tensor:
    """Volume rendering of the field by one camera (studio ``Camera``, frame 0) over a white
    background: [3, H, W] in [0, 1]."""
    from studio.camera import rays

    origins, directions = rays(camera)
    H, W, _ = origins.shape
    o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    centre = (field.lo + field.hi) / 2
    radius = float((field.hi - field.lo).norm() / 2)
    distance = float((o[0] - centre).norm())
    near, far = max(distance - radius, 1e-3), distance + radius
    t = torch.linspace(near, far, samples)
    if generator is not None:
        t = t + (torch.rand(samples, generator=generator) - 0.5) * (far - near) / samples
    points = o[:, None] + d[:, None] * t[None, :, None]  # [P, S, 3]
    density, color = field.query(points.reshape(-1, 3))
    density, color = density.reshape(-1, samples), color.reshape(-1, samples, 3)
    delta = (far - near) / samples
    alpha = 1 - torch.exp(-density * delta)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-10], 1), 1)
    weights = alpha * transmittance
    rgb = (weights[..., None] * color).sum(1) + (1 - weights.sum(1, keepdim=True))
    return rgb.T.reshape(3, H, W)


def _penetration_weight(progress: float) -> float:
    """InterFusion's schedule of the penetration weight ([0.001, 0.01, 0.1]) over a run of 10k steps,
    as a fraction of the run: 0.001 before 10% and after 90%, 0.01 at 10-20% and 80-90%, else 0.1."""
    if progress < 0.1 or progress >= 0.9:
        return 0.001
    if progress < 0.2 or progress >= 0.8:
        return 0.01
    return 0.1


class RefinedObject(ObjectModel):
    """A library or mesh object whose drawn meshes were refined; its parts, roles and signed distance
    (what contact and penetration are measured on) stay the original's."""

    def __init__(self, base: ObjectModel, meshes: dict[str, trimesh.Trimesh]) -> None:
        self.__dict__.update(base.__dict__)
        self._base = base
        self._refined = meshes

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        return self._base.sdf(points)

    def part_distance(self, part: str, points: torch.Tensor) -> torch.Tensor:
        return self._base.part_distance(part, points)

    def surface_samples(self, count: int, *, seed: int = 0) -> torch.Tensor:
        return self._base.surface_samples(count, seed=seed)

    def anchor(self, part: str) -> torch.Tensor:
        return self._base.anchor(part)

    def footprint(self, part: str):
        return self._base.footprint(part)

    def meshes(self) -> dict[str, trimesh.Trimesh]:
        return {k: m.copy() for k, m in self._refined.items()}


def refine_object(
    obj: ObjectModel, composition, guidance: ScoreDistillation, *, prompt: str, config, seed: int, progress
) -> tuple[ObjectModel, dict]:
    """Score distillation of the placed object (see the module docstring): the refined object and a
    report (model, steps, losses, the largest vertex move)."""
    from pipelines.interfusion.geometry import inside_mesh
    from pipelines.interfusion.optimize import body_params, object_pose, object_world_sdf
    from studio.camera import orbit_cameras

    problem, state = composition.problem, composition.state
    with torch.no_grad():
        body = problem.body_model(body_params(problem, state)).vertices[0]
        R, t, s = object_pose(problem, state)
    transform = np.eye(4)
    transform[:3, :3] = (R * s).numpy()
    transform[:3, 3] = t.numpy()
    parts = {k: m.copy().apply_transform(transform) for k, m in obj.meshes().items()}
    placed = trimesh.util.concatenate(list(parts.values()))
    field = field_from_object(placed, object_world_sdf(problem, state), np.asarray(placed.visual.vertex_colors))
    inside_body = inside_mesh(field.centres(), body, problem.body_model.faces).float()
    raw0 = field.raw.clone()
    field.raw.requires_grad_(True)
    field.logits.requires_grad_(True)
    optimizer = torch.optim.Adam([field.raw, field.logits], lr=0.01, betas=(0.9, 0.99), eps=1e-15)
    generator = torch.Generator().manual_seed(seed)
    embeddings = guidance.encode_prompt(f"a photo of a {obj.name}, 8K, HD")
    centre = ((field.lo + field.hi) / 2).tolist()
    radius = float((field.hi - field.lo).norm() / 2)
    size = 64 if guidance.device.type == "cuda" else 16
    history = []
    steps = config.sds_steps
    for step in range(steps):
        azimuth = float(torch.rand(1, generator=generator)) * 2 * math.pi
        elevation = math.radians(-10 + 55 * float(torch.rand(1, generator=generator)))
        camera = orbit_cameras(
            centre,
            radius=2.2 * radius,
            image_size=(size, size),
            num_frames=1,
            elevation=elevation,
            start_azimuth=azimuth,
            focal=size * 1.2,
        )
        image = render_field(field, camera, samples=32 if size <= 16 else 64, generator=generator)[None]
        loss = guidance.loss(image, embeddings, generator=generator, guidance_scale=config.sds_guidance or None)
        occupied = occupancy(torch.nn.functional.softplus(field.raw.reshape(-1)))
        penetration = (
            _penetration_weight(step / max(steps, 1)) * 9.2 * (occupied * inside_body).sum() / inside_body.sum().clamp_min(1)
        )
        keep = 1e-3 * (field.raw - raw0).square().mean()
        total = loss + penetration + keep
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
        progress.advance()
    refined, largest = {}, 0.0
    inverse = np.linalg.inv(transform)
    with torch.no_grad():
        for name, mesh in parts.items():
            moved, offset = _shrink_wrap(mesh, field)
            largest = max(largest, offset)
            _, colors = field.query(torch.as_tensor(moved.vertices, dtype=torch.float32))
            moved.visual = trimesh.visual.ColorVisuals(
                moved,
                vertex_colors=np.concatenate(
                    [(colors.numpy() * 255).astype(np.uint8), np.full((len(colors), 1), 255, np.uint8)], 1
                ),
            )
            refined[name] = moved.apply_transform(inverse)
    report = {
        "model": guidance.kind, "folder": str(guidance.folder), "steps": steps, "prompt": f"a photo of a {obj.name}, 8K, HD", "render_size": size,
        "loss_start": round(history[0], 4) if history else None, "loss_end": round(history[-1], 4) if history else None,
        "max_vertex_offset_mm": round(1000 * largest, 2),
        "note": "contact and penetration are measured on the object's shape before refinement; the refined surface is within max_vertex_offset_mm of it",
    }  # fmt: skip
    return RefinedObject(obj, refined), report


def _shrink_wrap(mesh: trimesh.Trimesh, field: VoxelField) -> tuple[trimesh.Trimesh, float]:
    """Each vertex moved along its normal, within +-MAX_OFFSET, to the outermost point where the
    field's occupancy is at least one half (unmoved where it never is): the mesh and the largest move."""
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    normals = torch.as_tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32)
    offsets = torch.linspace(-MAX_OFFSET, MAX_OFFSET, 17)
    probes = vertices[:, None] + offsets[None, :, None] * normals[:, None]
    density, _ = field.query(probes.reshape(-1, 3))
    occupied = occupancy(density).reshape(len(vertices), -1) >= 0.5
    index = torch.where(occupied.any(1), (occupied * torch.arange(1, 18)).argmax(1), torch.full((len(vertices),), 8))
    shift = offsets[index]
    moved = mesh.copy()
    moved.vertices = (vertices + shift[:, None] * normals).numpy()
    return moved, float(shift.abs().max()) if len(shift) else 0.0


__all__ = [
    "MAX_OFFSET",
    "RefinedObject",
    "ScoreDistillation",
    "VoxelField",
    "field_from_object",
    "find_diffusion_folder",
    "load_guidance",
    "refine_object",
    "render_field",
]
