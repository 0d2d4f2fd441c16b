"""``ChampPipeline``: a reference image + a HumanCondition -> an animation, with Champ's released weights.

Guidance comes from studio's renderer (depth, normal, semantic and skeleton maps of the condition's
body, standing in for Champ's depth, normal, semantic_map and dwpose inputs). The video is denoised in
Champ's overlapping, closed-loop windows: at every step each window's prediction is made on the device
and the overlaps are averaged, while the whole video's latents stay on the CPU, so device memory does
not grow with the video's length. The output keeps the requested size: the work is done on a canvas
padded to multiples of 64 pixels (the reference by edge replication, the guidance by moving the
camera's principal point) and cropped back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from studio.camera import Camera
from studio.condition import HumanCondition
from studio.errors import StudioError
from studio.pipeline import AnimateRequest, AnimateResult, PipelineBase

from .weights import (
    FOLDER_SOURCES,
    GUIDANCE_TYPES,
    SOURCE,
    SUBFOLDERS,
    ChampModelConfig,
    find_root,
    load_champ_files,
    model_config,
    weights_status,
)

if TYPE_CHECKING:  # the networks import diffusers and transformers: only when a pipeline is built
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPVisionModelWithProjection

    from .model import GuidanceEncoder, VideoUNet

logger = logging.getLogger(__name__)

# Champ's guidance input -> the studio map that stands in for it.
GUIDANCE_MAPS = {"depth": "depth", "normal": "normal", "semantic_map": "semantic", "dwpose": "skeleton"}


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(image: np.ndarray, size: int) -> torch.Tensor:
    """CLIP's input as Champ makes it: the whole image resized to ``size`` x ``size`` (squashed, not
    cropped; PIL bicubic on 8-bit pixels), then normalised with CLIP's mean and std.

    Args:
        image: [H, W, 3] uint8 RGB.
    Returns:
        [1, 3, size, size] float32
    """
    from PIL import Image

    square = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    x = torch.from_numpy(square.copy()).permute(2, 0, 1)[None].float() / 255.0
    mean = torch.tensor(CLIP_MEAN)[:, None, None]
    std = torch.tensor(CLIP_STD)[:, None, None]
    return (x - mean) / std


def make_scheduler(**overrides) -> DDIMScheduler:
    """Champ's sampler: DDIM, v-prediction, zero-terminal-SNR linear betas 0.00085-0.012, trailing spacing."""
    from diffusers import DDIMScheduler

    settings = dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False, steps_offset=1,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
    )
    return DDIMScheduler(**{**settings, **overrides})


@dataclasses.dataclass
class ChampConfig:
    """Sampling settings (the defaults are Champ's)."""

    steps: int = 20
    """DDIM denoising steps."""
    guidance_scale: float = 3.5
    """Classifier-free guidance on the CLIP image token (1 turns it off)."""
    context_frames: int = 24
    """Frames denoised together (at most the motion modules' 32)."""
    context_overlap: int = 4
    """Frames shared by neighbouring windows; their predictions are averaged. The last window wraps
    around to the first frames (Champ's closed-loop schedule, see ``context_windows``)."""
    decode_batch: int = 8
    """Frames decoded by the VAE at once."""

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be 1-1000, got {self.steps}")
        if not (np.isfinite(self.guidance_scale) and 0.0 <= self.guidance_scale <= 50.0):
            raise ValueError(f"guidance_scale must be 0-50, got {self.guidance_scale}")
        if not 1 <= self.context_frames <= 32:
            raise ValueError(f"context_frames must be 1-32 (the motion modules' length), got {self.context_frames}")
        if not 0 <= self.context_overlap < self.context_frames:
            raise ValueError(f"context_overlap must be 0-{self.context_frames - 1}, got {self.context_overlap}")
        if not 1 <= self.decode_batch <= 256:
            raise ValueError(f"decode_batch must be 1-256, got {self.decode_batch}")


@dataclasses.dataclass
class ChampOutput:
    frames: np.ndarray  # [T, H, W, 3] uint8


def context_windows(num_frames: int, size: int, overlap: int) -> list[list[int]]:
    """Champ's "uniform" closed-loop schedule: the frame indices of each window, in the order the motion
    modules see them.

    A window of ``size`` frames starts every ``size - overlap`` frames from 0 while the start is below
    ``num_frames``; indices past the end wrap around to the first frames, so the last window joins the
    video's end to its start (50 frames, 24 and 4: [0-23], [20-43], [40-49 then 0-13]). A video of at
    most ``size`` frames is one window. Champ's pipeline asks for the schedule of step 0 at every
    denoising step, so the windows are the same at every step.
    """
    if num_frames <= size:
        return [list(range(num_frames))]
    return [[i % num_frames for i in range(start, start + size)] for start in range(0, num_frames, size - overlap)]


def padded_canvas(height: int, width: int, multiple: int = 64) -> tuple[int, int, int, int]:
    """(canvas height, canvas width, top, left) of the smallest canvas in multiples that holds the image."""
    ch, cw = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    return ch, cw, (ch - height) // 2, (cw - width) // 2


def shift_camera(camera: Camera, dx: float, dy: float, image_size: tuple[int, int]) -> Camera:
    """The camera of a canvas whose pixel (dx, dy) is this image's (0, 0): padding (dx, dy > 0) or cropping (< 0)."""
    K = camera.K.clone()
    K[:, 0, 2] += dx
    K[:, 1, 2] += dy
    return Camera(K=K, extrinsics=camera.extrinsics, image_size=image_size)


def render_guidance(condition: HumanCondition, camera: Camera, *, body_model=None) -> np.ndarray:
    """Champ's four guidance inputs seen through ``camera``: [T, 4 * 3, H, W] uint8 in GUIDANCE_TYPES order."""
    rendered = dataclasses.replace(condition, camera=camera).render(maps=tuple(GUIDANCE_MAPS.values()), body_model=body_model)
    planes = []
    for champ_name in GUIDANCE_TYPES:
        m = rendered[GUIDANCE_MAPS[champ_name]]
        planes.append(np.repeat(m[..., None], 3, axis=-1) if m.ndim == 3 else m)  # depth is one channel
    return np.concatenate(planes, axis=-1).transpose(0, 3, 1, 2)


class ChampPipeline(PipelineBase):
    """Champ: human image animation guided by 3D body renders (Zhu et al. 2024), on studio's conditions."""

    name = "champ"
    tasks = ("animate",)
    Config = ChampConfig
    required_conditions = ("reference", "motion")
    needs_gpu = True  # runs on CPU too, but a 20-step video takes hours there
    chunk_frames = None  # its windows span the video: the whole motion in one call
    weights_help = SOURCE

    def __init__(
        self,
        *,
        vae: AutoencoderKL,
        image_encoder: CLIPVisionModelWithProjection,
        reference_unet,
        denoising_unet: VideoUNet,
        guidance_encoders: dict[str, GuidanceEncoder],
        scheduler: DDIMScheduler,
    ):
        self.vae = vae
        self.image_encoder = image_encoder
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        self.guidance_encoders = torch.nn.ModuleDict(guidance_encoders)
        self.scheduler = scheduler
        from .model import ReferenceBank

        self.reference_bank = ReferenceBank(reference_unet, denoising_unet.unet)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self._offload_hooks: list = []
        self.config = ChampConfig()
        for module in self._modules():
            module.eval().requires_grad_(False)

    def _modules(self) -> list[torch.nn.Module]:
        return [self.vae, self.image_encoder, self.reference_unet, self.denoising_unet, self.guidance_encoders]

    # --- weights -------------------------------------------------------------------------------

    @classmethod
    def weights_status(cls, weights: Path | None) -> tuple[bool, str]:
        return weights_status(weights)

    @classmethod
    def load(cls, weights: Path | None, config: ChampConfig) -> ChampPipeline:
        """The contract's constructor: ``from_pretrained`` with these sampling settings."""
        if weights is None:
            raise StudioError(f"champ: {weights_status(None)[1]}")
        pipe = cls.from_pretrained(weights)
        pipe.config = config
        return pipe

    @classmethod
    def from_pretrained(cls, weights: str | Path, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> ChampPipeline:
        """Load the official file layout (see ``weights``) strictly.

        Args:
            device: "cuda" when available, else "cpu" (default).
            dtype: float16 on CUDA, float32 on CPU (default). The VAE stays float32.
        """
        from diffusers import AutoencoderKL
        from transformers import CLIPVisionModelWithProjection

        from .model import build_networks

        weights = Path(weights)
        ok, message = weights_status(weights)
        if not ok:
            raise StudioError(f"champ: {message}")
        root = find_root(weights)
        config = model_config(root)
        with torch.device("meta"):  # no memory until the weights are assigned
            reference, denoising, encoders = build_networks(config)
        load_champ_files(root, reference, denoising, encoders)
        vae = _load_pretrained(AutoencoderKL, root / SUBFOLDERS["vae"])
        image_encoder = _load_pretrained(CLIPVisionModelWithProjection, root / SUBFOLDERS["image_encoder"])
        pipe = cls(vae=vae, image_encoder=image_encoder, reference_unet=reference, denoising_unet=denoising, guidance_encoders=encoders, scheduler=make_scheduler())
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return pipe.to(device, dtype or (torch.float16 if device.type == "cuda" else torch.float32))

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> ChampPipeline:
        """Move the networks; ``dtype`` applies to all but the VAE, which stays float32."""
        self.device = torch.device(device)
        self.dtype = dtype or self.dtype
        for module in self._modules():
            # torch's own .to: diffusers' override warns about fp32-kept modules, which these have none of
            torch.nn.Module.to(module, self.device, dtype=torch.float32 if module is self.vae else self.dtype)
        return self

    def enable_model_cpu_offload(self) -> ChampPipeline:
        """Keep each large network on the CPU until it runs (accelerate hooks); needs CUDA."""
        if not torch.cuda.is_available():
            raise StudioError("CPU offload needs a CUDA GPU")
        from accelerate import cpu_offload_with_hook

        gpu = torch.device("cuda")
        self.guidance_encoders.to(gpu, self.dtype)  # small, and called between every denoising step
        hook = None
        for module in (self.image_encoder, self.vae, self.reference_unet, self.denoising_unet):
            module.to("cpu")
            _, hook = cpu_offload_with_hook(module, gpu, prev_module_hook=hook)
            self._offload_hooks.append(hook)
        self.device = gpu
        return self

    # --- sampling ------------------------------------------------------------------------------

    def check_inputs(self, reference: np.ndarray, condition: HumanCondition, height: int, width: int, config: ChampConfig) -> None:
        if not isinstance(reference, np.ndarray) or reference.dtype != np.uint8 or reference.ndim != 3 or reference.shape[2] != 3:
            raise ValueError("the reference must be an [H, W, 3] uint8 RGB image")
        if not isinstance(condition, HumanCondition):
            raise ValueError(f"champ needs a HumanCondition with {', '.join(self.required_conditions)}; got {type(condition).__name__}")
        if condition.num_frames < 1:
            raise ValueError("the condition has no frames")
        if height < 8 or width < 8:
            raise ValueError(f"output size must be at least 8x8, got {height}x{width}")
        motion = self.denoising_unet.motion_config
        max_frames = motion.max_frames if motion is not None else 1
        if not 1 <= config.context_frames <= max_frames:
            raise ValueError(f"context_frames must be 1-{max_frames} (the motion modules' length), got {config.context_frames}")
        if not 0 <= config.context_overlap < config.context_frames:
            raise ValueError(f"context_overlap must be 0-{config.context_frames - 1}, got {config.context_overlap}")
        if config.steps < 1:
            raise ValueError(f"steps must be at least 1, got {config.steps}")

    @torch.no_grad()
    def __call__(
        self,
        reference: np.ndarray,
        condition: HumanCondition,
        *,
        height: int | None = None,
        width: int | None = None,
        config: ChampConfig | None = None,
        seed: int = 0,
        body_model=None,
        checkpoint_dir: str | Path | None = None,
        callback: Callable[[int, int], None] | None = None,
    ) -> ChampOutput:
        """Animate ``reference`` with the motion in ``condition``.

        Args:
            reference: the person to animate [H0, W0, 3] uint8; resized to the output size.
            condition: T frames of body and camera; the output has T frames.
            height, width: output size (default: the condition's image size).
            seed: seed of the initial noise (drawn on the CPU, so the same on every device).
            body_model: the body model to render ``condition`` with (default: loaded by name).
            checkpoint_dir: if given, the latents are saved there after every step, and a run with the
                same inputs continues from the last saved step.
            callback: called with (units done, total units); a unit is one window at one step.
        Returns:
            ``ChampOutput.frames`` [T, height, width, 3] uint8.
        """
        config = config or ChampConfig()
        height, width = height or condition.camera.image_size[0], width or condition.camera.image_size[1]
        self.check_inputs(reference, condition, height, width, config)
        import cv2

        canvas = padded_canvas(height, width)
        ch, cw, top, left = canvas
        ref = cv2.resize(reference, (width, height), interpolation=cv2.INTER_AREA if reference.shape[0] > height else cv2.INTER_LINEAR)
        ref = cv2.copyMakeBorder(ref, top, ch - height - top, left, cw - width - left, cv2.BORDER_REPLICATE)
        camera = shift_camera(condition.camera.resized((height, width)), left, top, (ch, cw))
        maps = render_guidance(condition, camera, body_model=body_model)
        num_frames = condition.num_frames
        windows = context_windows(num_frames, config.context_frames, config.context_overlap)
        use_cfg = config.guidance_scale > 1.0

        # The reference: its CLIP token and its attention features, computed once. As in Champ, the
        # unconditional half of a guided batch gets a zero token and no reference features.
        from .model import encode_guidance

        pixels = clip_pixels(reference, self.image_encoder.config.image_size).to(self.device, self.dtype)
        token = self.image_encoder(pixels).image_embeds[:, None].to(self.dtype)  # [1, 1, D]
        tokens = torch.cat([torch.zeros_like(token), token]) if use_cfg else token
        ref_pixels = torch.from_numpy(ref).to(self.device, torch.float32).permute(2, 0, 1)[None] / 127.5 - 1.0
        scale = self.vae.config.scaling_factor
        ref_latent = (self.vae.encode(ref_pixels).latent_dist.mean * scale).to(self.dtype)
        self.reference_bank.clear()
        self.reference_unet(ref_latent, torch.zeros(1, device=self.device), token, return_dict=False)
        self.reference_bank.readers = torch.tensor([False, True]) if use_cfg else None

        # Latents of the whole video on the CPU; windows go to the device one at a time.
        self.scheduler.set_timesteps(config.steps)
        latent_shape = (1, self.vae.config.latent_channels, num_frames, ch // 8, cw // 8)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn(latent_shape, generator=generator) * self.scheduler.init_noise_sigma
        start, state_file = 0, None
        if checkpoint_dir is not None:
            state_file = Path(checkpoint_dir) / "champ_latents.pt"
            start, latents = _resume(state_file, latents, config, seed)
        total = config.steps * len(windows)
        for step in range(start, config.steps):
            t = self.scheduler.timesteps[step]
            # Each branch's predictions are summed per frame and divided by the frame's window count;
            # then the guidance combines the two averages (Champ's order).
            prediction = torch.zeros((len(tokens), *latents.shape[1:]))  # [1 or 2 (uncond, cond), C, T, h, w]
            counts = torch.zeros(num_frames)
            for w, frames in enumerate(windows):
                x = latents[:, :, frames].to(self.device, self.dtype)
                window_maps = torch.from_numpy(maps[frames]).to(self.device, self.dtype).div(255.0).transpose(0, 1)[None]
                guidance = encode_guidance(self.guidance_encoders, window_maps, GUIDANCE_TYPES)  # [1, C0, F, h, w]
                x, guidance = x.expand(len(tokens), *x.shape[1:]), guidance.expand(len(tokens), *guidance.shape[1:])
                out = self.denoising_unet(self.scheduler.scale_model_input(x, t), t, tokens, guidance=guidance)
                prediction[:, :, frames] += out.float().cpu()
                counts[frames] += 1
                if callback:
                    callback(step * len(windows) + w + 1, total)
            prediction /= counts[None, None, :, None, None]
            if use_cfg:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + config.guidance_scale * (cond - uncond)
            latents = self.scheduler.step(prediction, t, latents).prev_sample
            if state_file is not None:
                _save_state(state_file, latents, step + 1, config, seed)
        self.reference_bank.clear()
        for hook in self._offload_hooks:
            hook.offload()

        # Decode in batches and crop back to the requested size.
        frames = np.empty((num_frames, height, width, 3), np.uint8)
        for a in range(0, num_frames, config.decode_batch):
            z = latents[0, :, a : a + config.decode_batch].transpose(0, 1).to(self.device, torch.float32) / scale
            images = self.vae.decode(z).sample.clamp(-1, 1)
            images = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            frames[a : a + len(images)] = images[:, top : top + height, left : left + width]
        return ChampOutput(frames=frames)


    def animate(self, request: AnimateRequest) -> AnimateResult:
        """The ``animate`` task: Champ with this pipeline's settings on one request (the whole motion;
        the latents are checkpointed in ``request.checkpoint_dir`` after every step)."""
        config = self.config
        motion = self.denoising_unet.motion_config
        if motion is not None and config.context_frames > motion.max_frames:  # models trained with shorter windows
            config = dataclasses.replace(config, context_frames=motion.max_frames, context_overlap=min(config.context_overlap, motion.max_frames // 2))
        h, w = request.size
        try:
            out = self(
                request.reference, request.motion, height=h, width=w, config=config, seed=request.seed, body_model=request.body_model,
                checkpoint_dir=request.checkpoint_dir, callback=request.on_progress,
            )  # fmt: skip
        except ValueError as exc:
            raise StudioError(f"champ: {exc}") from exc
        return AnimateResult(frames=out.frames)

    def close(self) -> None:
        """Free the networks' memory (GPU memory too)."""
        import gc

        for hook in self._offload_hooks:
            hook.remove()
        self._offload_hooks = []
        self.reference_bank.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _state_settings(config: ChampConfig, seed: int) -> dict:
    return {"steps": config.steps, "seed": seed, "scale": config.guidance_scale, "context": [config.context_frames, config.context_overlap]}


def _save_state(path: Path, latents: torch.Tensor, step: int, config: ChampConfig, seed: int) -> None:
    from studio.media import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"latents": latents, "step": step, "settings": _state_settings(config, seed)}, tmp)


def _resume(path: Path, latents: torch.Tensor, config: ChampConfig, seed: int) -> tuple[int, torch.Tensor]:
    """(first step to run, latents) from a saved state of the same run, else (0, the fresh latents)."""
    if not path.is_file():
        return 0, latents
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        logger.warning("%s is unreadable; starting the denoising over", path)
        return 0, latents
    if state.get("settings") != _state_settings(config, seed) or tuple(state["latents"].shape) != tuple(latents.shape):
        return 0, latents
    logger.info("resuming champ at step %d of %d", state["step"], config.steps)
    return int(state["step"]), state["latents"]


def _load_pretrained(cls, folder: Path):
    """A diffusers/transformers model from a local folder, quietly (no download, no progress bars)."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    try:
        return cls.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudioError(f"{folder}: cannot load {cls.__name__} ({first}); it comes from {FOLDER_SOURCES.get(folder.name, SOURCE)}") from exc


__all__ = ["ChampConfig", "ChampModelConfig", "ChampOutput", "ChampPipeline", "GUIDANCE_MAPS", "context_windows", "make_scheduler", "render_guidance", "shift_camera"]
