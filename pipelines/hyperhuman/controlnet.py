"""``ControlNetPipeline``: the public-weights path to a posed human image. Stable Diffusion 1.5 (or SDXL)
with OpenPose, depth and normal ControlNets (diffusers' multi-ControlNet), all from local folders,
driven by the same maps studio renders for HyperHuman.

The maps are sent in the encodings the public ControlNets were trained on: the skeleton is already
OpenPose-style; the depth map is already MiDaS-style (near bright, per-image range, background 0);
the normal map is turned into normal-BAE's colours (``bae_normal``). This is the closest public
stand-in for HyperHuman's structure-guided generation; it is not HyperHuman (no joint depth and
normal prediction: the structure comes from the body model alone).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from studio.errors import StudioError
from studio.pipeline import ImageRequest, ImageResult, PipelineBase

from .conditioning import bae_normal, render_structure
from .refiner import device_and_dtype
from .weights import BASE_SOURCE, CONTROLNET_SOURCES, controlnet_names, controlnet_status, load_pretrained, pipeline_folder

logger = logging.getLogger(__name__)

# ControlNet folder -> the studio map it reads.
CONTROL_MAPS = {"openpose": "skeleton", "depth": "depth", "normal": "normal"}


@dataclasses.dataclass
class ControlNetConfig:
    """Sampling settings. The ControlNet scales are starting points, not tuned values (no weights were
    available to tune them); a scale of 0 leaves that ControlNet out."""

    steps: int = 30
    """Denoising steps (the base folder's own scheduler)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance on the prompt (1 turns it off)."""
    openpose_scale: float = 1.0
    """Strength of the OpenPose ControlNet (0 leaves it out)."""
    depth_scale: float = 0.5
    """Strength of the depth ControlNet (0 leaves it out)."""
    normal_scale: float = 0.5
    """Strength of the normal ControlNet (0 leaves it out)."""

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be 1-1000, got {self.steps}")
        if not (np.isfinite(self.guidance_scale) and 0.0 <= self.guidance_scale <= 50.0):
            raise ValueError(f"guidance_scale must be 0-50, got {self.guidance_scale}")
        for name in CONTROL_MAPS:
            value = getattr(self, f"{name}_scale")
            if not (np.isfinite(value) and 0.0 <= value <= 5.0):
                raise ValueError(f"{name}_scale must be 0-5, got {value}")

    def scales(self) -> dict[str, float]:
        return {name: getattr(self, f"{name}_scale") for name in CONTROL_MAPS}


def control_images(maps: dict[str, np.ndarray], names: list[str]):
    """The PIL control images for the ControlNets ``names`` from studio's maps (see the module docstring)."""
    from PIL import Image

    images = []
    for name in names:
        m = maps[CONTROL_MAPS[name]]
        if name == "depth":
            m = np.repeat(m[..., None], 3, axis=2)
        elif name == "normal":
            m = bae_normal(m)
        images.append(Image.fromarray(m))
    return images


class ControlNetPipeline(PipelineBase):
    """SD 1.5 or SDXL with OpenPose, depth and normal ControlNets, from local folders."""

    name = "controlnet"
    tasks = ("image",)
    Config = ControlNetConfig
    required_conditions = ("pose",)
    optional_conditions = ("prompt",)
    needs_gpu = True  # 30 steps of SD 1.5 with three ControlNets take minutes per image on a CPU
    weights_help = f"public weights: {BASE_SOURCE} with ControlNets " + "; ".join(
        f"{k}/ {v}" for k, v in CONTROLNET_SOURCES.items()
    )

    def __init__(self, pipe, names: list[str], *, config: ControlNetConfig | None = None):
        self.pipe, self.names = pipe, list(names)
        self.config = config or ControlNetConfig()
        self.device = pipe.device

    @property
    def is_xl(self) -> bool:
        return hasattr(self.pipe, "text_encoder_2")

    @classmethod
    def weights_status(cls, weights: Path | None) -> tuple[bool, str]:
        return controlnet_status(weights)

    @classmethod
    def load(cls, weights: Path | None, config: ControlNetConfig) -> ControlNetPipeline:
        return cls.from_pretrained(weights, config=config)

    @classmethod
    def from_pretrained(
        cls,
        weights: str | Path | None,
        *,
        config: ControlNetConfig | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> ControlNetPipeline:
        """The base pipeline and the ControlNets present whose scale is not 0.

        Args:
            device: "cuda" when available, else "cpu" (default).
            dtype: float16 on CUDA, float32 on CPU (default).
        """
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

        ok, message = controlnet_status(None if weights is None else Path(weights))
        if not ok:
            raise StudioError(f"controlnet: {message}")
        config = config or ControlNetConfig()
        folder = pipeline_folder(Path(weights), "controlnet", "base/model_index.json")
        scales = config.scales()
        names = [n for n in controlnet_names(folder) if scales[n] > 0]
        if not names:
            raise StudioError(
                f"controlnet: every ControlNet found in {folder} ({', '.join(controlnet_names(folder))}) has scale 0"
            )
        device, dtype = device_and_dtype(device, dtype)
        nets = [load_pretrained(ControlNetModel, folder / n, CONTROLNET_SOURCES[n], dtype=dtype) for n in names]
        xl = (folder / "base" / "text_encoder_2").is_dir()
        extra = {} if xl else {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        pipeline_class = StableDiffusionXLControlNetPipeline if xl else StableDiffusionControlNetPipeline
        pipe = load_pretrained(
            pipeline_class, folder / "base", BASE_SOURCE, controlnet=nets if len(nets) > 1 else nets[0], dtype=dtype, **extra
        )
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)
        logger.info("controlnet: %s base with %s", "SDXL" if xl else "SD", ", ".join(names))
        return cls(pipe, names, config=config)

    def check_inputs(self, request: ImageRequest) -> None:
        if request.pose is None:
            raise ValueError("the ControlNets follow a pose: give a pose (a motion .npz frame)")
        if request.pose.num_frames != 1:
            raise ValueError(f"the pose must have one frame, got {request.pose.num_frames}")
        h, w = request.size
        if h % 8 or w % 8:
            raise ValueError(f"the size must be multiples of 8, got {h}x{w}")

    @torch.no_grad()
    def __call__(
        self,
        maps: dict[str, np.ndarray],
        prompt: str = "",
        *,
        negative_prompt: str | None = None,
        seed: int = 0,
        callback: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """An image steered by studio's maps.

        Args:
            maps: "skeleton" [H, W, 3], "depth" [H, W], "normal" [H, W, 3] uint8 (H, W multiples of 8);
                only those of the loaded ControlNets are read.
            seed: the noise seed (drawn on the CPU, so the same on every device).
            callback: called with (steps done, steps in all).
        Returns:
            [H, W, 3] uint8.
        """
        config = self.config
        h, w = next(iter(maps.values())).shape[:2]
        images = control_images(maps, self.names)
        scales = [config.scales()[n] for n in self.names]

        def on_step(pipe, step, timestep, kwargs):
            if callback:  # some schedulers (PNDM) take one step more than asked
                callback(step + 1, len(pipe.scheduler.timesteps))
            return kwargs

        out = self.pipe(
            prompt=prompt, negative_prompt=negative_prompt, image=images if len(images) > 1 else images[0],
            controlnet_conditioning_scale=scales if len(scales) > 1 else scales[0], num_inference_steps=config.steps,
            guidance_scale=config.guidance_scale, height=h, width=w, output_type="np",
            generator=torch.Generator("cpu").manual_seed(seed), callback_on_step_end=on_step,
        )  # fmt: skip
        return (np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8)

    def image(self, request: ImageRequest) -> ImageResult:
        """The ``image`` task. ``maps`` holds "control_normal", the normal map as sent (normal-BAE colours),
        when the normal ControlNet ran."""
        self.check_inputs(request)
        maps = render_structure(request.pose, request.body_model, tuple(request.size))
        image = self(
            maps, request.prompt or "", negative_prompt=request.negative_prompt, seed=request.seed, callback=request.on_progress
        )
        extra = {"control_normal": bae_normal(maps["normal"])} if "normal" in self.names else {}
        return ImageResult(image=image, maps=extra)

    def close(self) -> None:
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


__all__ = ["CONTROL_MAPS", "ControlNetConfig", "ControlNetPipeline", "control_images"]
