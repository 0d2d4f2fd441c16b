"""``HyperHumanPipeline``: a pose (and a caption) -> a human image with its depth and surface normal.

Stage 1 (the Latent Structural Diffusion Model, ``StructuralUNet``) denoises the RGB, depth and normal
latents together from the skeleton that studio renders for the pose: DDIM on a zero-terminal-SNR
schedule with v-prediction, the same timestep for all three, independent noise per modality, and
classifier-free guidance whose unconditional half has the empty caption and no skeleton (the
condition dropped in training). Stage 2 (the Structure-Guided Refiner, optional) redraws the image
with SDXL from the skeleton and stage 1's depth and normal.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from studio.errors import StudioError
from studio.pipeline import ImageRequest, ImageResult, PipelineBase

from .conditioning import (
    depth_from_pixels,
    encode_prompt,
    from_pixels,
    render_structure,
    resize_map,
    to_pixels,
    vae_decode,
    vae_encode,
)
from .refiner import StructureGuidedRefiner, device_and_dtype, guide, move_modules, vae_factor
from .weights import (
    HYPERHUMAN_SOURCE,
    REFINER_FILES,
    SD2_SOURCE,
    TRAIN_SCRIPT,
    hyperhuman_status,
    load_pretrained,
    missing,
    pipeline_folder,
)

if TYPE_CHECKING:  # the networks import diffusers: only when a pipeline is built
    from .model import StructuralUNet

logger = logging.getLogger(__name__)


def make_scheduler():
    """HyperHuman's sampler: DDIM over SD-2's scaled-linear betas (0.00085-0.012, T = 1000) rescaled to
    zero terminal SNR (alpha_T = 0), v-prediction, trailing timesteps (so sampling starts at t = T)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
    )  # fmt: skip


@dataclasses.dataclass
class HyperHumanConfig:
    """Sampling settings (the defaults are the paper's evaluation settings)."""

    steps: int = 50
    """DDIM steps of stage 1."""
    guidance_scale: float = 7.5
    """Classifier-free guidance of stage 1 on the caption and skeleton together (1 turns it off)."""
    refine: bool = True
    """Run the Structure-Guided Refiner (stage 2) when its weights are found (refiner/ in the weights folder)."""
    refiner_steps: int = 50
    """DDIM steps of the refiner."""
    refiner_guidance_scale: float = 7.5
    """Classifier-free guidance of the refiner on the caption."""
    stage1_size: int = 512
    """Longer side of stage 1 when the refiner runs (it draws the requested size, e.g. --size 1024); without the refiner stage 1 draws the requested size."""

    def __post_init__(self) -> None:
        for name in ("steps", "refiner_steps"):
            if not 1 <= getattr(self, name) <= 1000:
                raise ValueError(f"{name} must be 1-1000, got {getattr(self, name)}")
        for name in ("guidance_scale", "refiner_guidance_scale"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0.0 <= value <= 50.0):
                raise ValueError(f"{name} must be 0-50, got {value}")
        if not 64 <= self.stage1_size <= 2048 or self.stage1_size % 64:
            raise ValueError(f"stage1_size must be a multiple of 64 in 64-2048, got {self.stage1_size}")


def stage1_size(size: tuple[int, int], longer: int) -> tuple[int, int]:
    """Stage 1's (height, width) for an output of ``size`` when the refiner runs: the aspect kept, the
    longer side at most ``longer``, both sides multiples of 64."""
    h, w = size
    scale = min(1.0, longer / max(h, w))
    return max(64, round(h * scale / 64) * 64), max(64, round(w * scale / 64) * 64)


class HyperHumanPipeline(PipelineBase):
    """HyperHuman (Liu et al., ICLR 2024): latent structural diffusion of a human image with its depth
    and normal, from a pose skeleton and a caption, and an optional structure-guided SDXL refiner."""

    name = "hyperhuman"
    tasks = ("image",)
    Config = HyperHumanConfig
    required_conditions = ("pose",)
    optional_conditions = ("prompt",)
    needs_gpu = True  # 50 steps of an SD-2-sized UNet with three experts take minutes per image on a CPU
    weights_help = HYPERHUMAN_SOURCE

    def __init__(
        self,
        *,
        unet: StructuralUNet,
        vae,
        text_encoder,
        tokenizer,
        scheduler=None,
        refiner: StructureGuidedRefiner | None = None,
        config: HyperHumanConfig | None = None,
    ):
        if tuple(unet.modalities) != ("rgb", "depth", "normal"):
            raise ValueError(
                f"hyperhuman's UNet must denoise rgb, depth and normal, in that order; this one has {', '.join(unet.modalities)}"
            )
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler = scheduler or make_scheduler()
        self.refiner = refiner
        self.config = config or HyperHumanConfig()
        self.device, self.dtype = torch.device("cpu"), torch.float32
        for module in self.modules():
            module.eval().requires_grad_(False)

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, self.text_encoder]

    # --- weights -----------------------------------------------------------------------------------

    @classmethod
    def weights_status(cls, weights: Path | None) -> tuple[bool, str]:
        return hyperhuman_status(weights)

    @classmethod
    def load(cls, weights: Path | None, config: HyperHumanConfig) -> HyperHumanPipeline:
        """The contract's constructor: ``from_pretrained`` with these settings."""
        return cls.from_pretrained(weights, config=config)

    @classmethod
    def from_pretrained(
        cls,
        weights: str | Path | None,
        *,
        config: HyperHumanConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> HyperHumanPipeline:
        """Load the layout in ``weights`` (see ``pipelines.hyperhuman.weights``); the refiner too when
        ``config.refine`` and its folder is complete.

        Args:
            device: "cuda" when available, else "cpu" (default).
            dtype: float16 on CUDA, float32 on CPU (default); the VAEs stay float32.
        """
        from diffusers import AutoencoderKL
        from transformers import CLIPTextModel, CLIPTokenizer

        from .model import StructuralUNet

        ok, message = hyperhuman_status(None if weights is None else Path(weights))
        if not ok:
            raise StudioError(f"hyperhuman: {message}")
        config = config or HyperHumanConfig()
        folder = pipeline_folder(Path(weights), "hyperhuman", "unet/config.json")
        refiner = None
        if config.refine and not missing(folder, REFINER_FILES):
            refiner = StructureGuidedRefiner.from_pretrained(folder / "refiner")
        pipe = cls(
            unet=load_pretrained(StructuralUNet, folder / "unet", f"{TRAIN_SCRIPT} --stage 1"),
            vae=load_pretrained(AutoencoderKL, folder / "vae", SD2_SOURCE),
            text_encoder=load_pretrained(CLIPTextModel, folder / "text_encoder", SD2_SOURCE),
            tokenizer=load_pretrained(CLIPTokenizer, folder / "tokenizer", SD2_SOURCE),
            refiner=refiner,
            config=config,
        )  # fmt: skip
        return pipe.to(*device_and_dtype(device, dtype))

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> HyperHumanPipeline:
        """Move the networks (the VAE stays float32)."""
        self.device, self.dtype = torch.device(device), dtype or self.dtype
        move_modules(self.modules(), self.device, self.dtype, float32=(self.vae,))
        if self.refiner is not None:
            self.refiner.to(self.device, self.dtype)
        return self

    # --- sampling ----------------------------------------------------------------------------------

    def _text(self, prompt: str, negative_prompt: str | None, use_cfg: bool) -> torch.Tensor:
        """Text tokens [1 or 2, L, D], the unconditional (empty or negative caption) half first."""
        prompts = [negative_prompt or "", prompt] if use_cfg else [prompt]
        return encode_prompt(self.tokenizer, self.text_encoder, prompts).to(self.device, self.dtype)

    @torch.no_grad()
    def sample_structure(
        self,
        skeleton: np.ndarray,
        prompt: str = "",
        *,
        negative_prompt: str | None = None,
        seed: int = 0,
        config: HyperHumanConfig | None = None,
        callback: Callable[[int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Stage 1: the image, depth and normal drawn together for a skeleton.

        Args:
            skeleton: [H, W, 3] uint8 pose skeleton (H, W multiples of 8 times the UNet's up factor).
            seed: the noise seed (drawn on the CPU, so the same on every device).
            callback: called with the number of steps done.
        Returns:
            "rgb" [H, W, 3], "depth" [H, W] and "normal" [H, W, 3], uint8.
        """
        config = config or self.config
        height, width = skeleton.shape[:2]
        use_cfg = config.guidance_scale > 1.0
        batch = 2 if use_cfg else 1
        text = self._text(prompt, negative_prompt, use_cfg)
        condition = vae_encode(self.vae, to_pixels(skeleton)).to(self.device, self.dtype)  # [1, C, h, w]
        if use_cfg:  # the dropped condition of training: no skeleton
            condition = torch.cat([torch.zeros_like(condition), condition])
        size_ids = torch.tensor([[height, width, 0, 0]], dtype=torch.float32).expand(batch, -1).to(self.device)
        modalities = self.unet.modalities
        f = vae_factor(self.vae)
        shape = (len(modalities), 1, self.unet.latent_channels, height // f, width // f)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn(shape, generator=generator) * self.scheduler.init_noise_sigma  # independent noise per modality
        self.scheduler.set_timesteps(config.steps)
        for i, t in enumerate(self.scheduler.timesteps):
            x = latents.expand(-1, batch, -1, -1, -1).to(self.device, self.dtype)
            v = (
                self.unet(self.scheduler.scale_model_input(x, t), t, text, condition=condition, size_ids=size_ids).float().cpu()
            )  # [M, batch, C, h, w]
            v = guide(v, config.guidance_scale, dim=1) if use_cfg else v
            latents = self.scheduler.step(v.flatten(0, 1), t, latents.flatten(0, 1)).prev_sample.reshape(shape)
            if callback:
                callback(i + 1)
        decoded = {
            m: from_pixels(vae_decode(self.vae, self.unet.from_image_statistics(latents[k], m)))[0]
            for k, m in enumerate(modalities)
        }
        return {"rgb": decoded["rgb"], "depth": depth_from_pixels(decoded["depth"]), "normal": decoded["normal"]}

    def check_inputs(self, request: ImageRequest) -> None:
        if request.pose is None:
            raise ValueError("hyperhuman draws a person in a pose: give a pose (a motion .npz frame)")
        if request.pose.num_frames != 1:
            raise ValueError(f"the pose must have one frame, got {request.pose.num_frames}")
        h, w = request.size
        factor = vae_factor(self.vae) * self.unet.up_factor
        if h % factor or w % factor:
            raise ValueError(f"the size must be multiples of {factor}, got {h}x{w}")

    def image(self, request: ImageRequest) -> ImageResult:
        """The ``image`` task: stage 1 (and the refiner when loaded) for the request's pose and prompt.

        ``maps`` holds stage 1's predicted "depth" and "normal" at the output size (and "stage1", its
        image, when the refiner ran)."""
        self.check_inputs(request)
        config = self.config
        size = tuple(request.size)
        refine = self.refiner is not None and config.refine
        size1 = stage1_size(size, config.stage1_size) if refine else size
        total = config.steps + (config.refiner_steps if refine else 0)
        report = (lambda done: request.on_progress(done, total)) if request.on_progress else None
        skeleton = render_structure(request.pose, request.body_model, size1)["skeleton"]
        prompt = request.prompt or ""
        out = self.sample_structure(
            skeleton, prompt, negative_prompt=request.negative_prompt, seed=request.seed, config=config, callback=report
        )
        depth, normal = resize_map(out["depth"], size), resize_map(out["normal"], size)
        maps = {"depth": depth, "normal": normal}
        image = out["rgb"]
        if refine:
            full_skeleton = skeleton if size1 == size else render_structure(request.pose, request.body_model, size)["skeleton"]
            image = self.refiner(
                prompt, {"skeleton": full_skeleton, "depth": depth, "normal": normal}, negative_prompt=request.negative_prompt,
                steps=config.refiner_steps, guidance_scale=config.refiner_guidance_scale, seed=request.seed,
                callback=(lambda done: report(config.steps + done)) if report else None,
            )  # fmt: skip
            maps["stage1"] = out["rgb"]
        return ImageResult(image=image, maps=maps)

    def close(self) -> None:
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


__all__ = ["HyperHumanConfig", "HyperHumanPipeline", "make_scheduler", "stage1_size"]
