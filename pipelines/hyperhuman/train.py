"""Training HyperHuman's two stages with accelerate, on a folder of images with captions and poses.

- ``--stage 1`` (Latent Structural Diffusion): a ``StructuralUNet`` initialised from SD-2-base's UNet
  (``--base``, a diffusers SD-2-base folder) is fine-tuned as a whole to v-prediction on the
  zero-terminal-SNR schedule. The image, depth and normal are VAE-encoded; depth and normal latents
  are moved to the image latents' per-channel statistics (measured on the data before training and
  saved in the UNet's config); each modality gets its own noise at one shared timestep; the loss is
  the sum of the three v-prediction MSEs. The skeleton's latent is the condition; 15% of samples
  drop the caption and the skeleton together (empty caption, zero skeleton latent) so that
  classifier-free guidance works.
- ``--stage refiner`` (Structure-Guided Refiner): SDXL-1.0 base (``--base``) stays frozen; a
  ``StructureControlNet`` (a trainable copy of its encoder with the skeleton, depth and normal
  embedders) learns SDXL's own epsilon objective. Each structure map and the caption are dropped
  independently with probability 0.5 (a zero map; SDXL's zero text embedding).

Data: one folder, each sample a set of files sharing a stem::

    DATA/<stem>.jpg|png|webp   the image
    DATA/<stem>.txt            its caption (missing: an empty caption)
    DATA/<stem>.npz            its pose, from ``studio pose <stem>.jpg -o <stem>.npz`` (one frame)
    DATA/<stem>_depth.png      optional: a depth map (grey, near bright, e.g. from MiDaS or Omnidata)
    DATA/<stem>_normal.png     optional: a normal map in studio's colours (x right, y up, z to the viewer)

Without ``_depth.png`` / ``_normal.png`` the targets are studio's renders of the fitted body: depth and
normal on the body only, background 0. That teaches body geometry, not the scene's; the paper used
Omnidata/MiDaS estimates of whole images, so supply maps for anything beyond a body-only model.
Images are scaled so the shorter side is ``--size`` and centre-cropped (the original size and the
crop corner are the micro-conditioning); the pose is rendered through the same crop.

Outputs (``--output DIR``, the layout ``HyperHumanPipeline.from_pretrained`` reads)::

    DIR/hyperhuman/unet/               stage 1's StructuralUNet (config.json + safetensors)
    DIR/hyperhuman/{vae,text_encoder,tokenizer}/   links to --base's folders (stage 1)
    DIR/hyperhuman/refiner/controlnet/ the refiner's StructureControlNet
    DIR/hyperhuman/refiner/base/       a link to --base (the SDXL folder)

Run on several GPUs with ``accelerate launch``::

    accelerate launch -m pipelines.hyperhuman.train --stage 1 --data DATA --base SD2_BASE --output runs
    accelerate launch -m pipelines.hyperhuman.train --stage refiner --data DATA --base SDXL_BASE --output runs --size 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from studio.errors import StudioError

from .conditioning import STRUCTURE_MAPS, encode_prompt, encode_prompt_xl, vae_encode
from .pipeline import make_scheduler
from .refiner import ddim_from, scheduler_config
from .weights import SD2_SOURCE, SDXL_SOURCE, load_pretrained

logger = logging.getLogger(__name__)
MAP_SUFFIXES = {"depth": "_depth", "normal": "_normal"}


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (saved beside the checkpoints)."""

    stage: Literal["1", "refiner"] = "1"
    """"1": the Latent Structural Diffusion Model; "refiner": the Structure-Guided Refiner."""
    size: int = 512
    """Side of the square training crops (the paper: 512 for stage 1, 1024 for the refiner)."""
    batch_size: int = 1
    """Samples per step and process."""
    learning_rate: float = 1e-5
    """AdamW learning rate (the paper: 1e-5, no warm-up)."""
    weight_decay: float = 0.01
    """AdamW weight decay (the paper: 0.01)."""
    steps: int = 10000
    """Optimiser steps."""
    gradient_accumulation: int = 1
    """Batches per optimiser step."""
    mixed_precision: str = "no"
    """"no", "fp16" or "bf16" (accelerate)."""
    condition_dropout: float | None = None
    """Probability of dropping a condition (default: the paper's 0.15 for stage 1, caption and skeleton
    together; 0.5 for the refiner, each map and the caption independently)."""
    stats_batches: int = 16
    """Batches used to measure the latents' statistics before stage 1 trains."""
    save_every: int = 1000
    """Steps between checkpoints (and at the end)."""
    seed: int = 0
    """Seed of noise, timesteps and dropout."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (less memory, slower)."""

    def __post_init__(self) -> None:
        if self.stage not in ("1", "refiner"):
            raise ValueError(f"stage must be 1 or refiner, got {self.stage!r}")
        if self.size < 64 or self.size % 64:
            raise ValueError(f"size must be a multiple of 64, got {self.size}")
        if self.condition_dropout is None:
            self.condition_dropout = 0.15 if self.stage == "1" else 0.5
        if not 0.0 <= self.condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be 0-1, got {self.condition_dropout}")


# --- data ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    image: Path
    pose: Path
    caption: str
    maps: dict  # "depth"/"normal" -> Path of a user-supplied map


def find_samples(data: Path) -> list[Sample]:
    """The samples of a data folder (see the module docstring); one line naming what is wrong otherwise."""
    from studio.media import IMAGE_SUFFIXES

    data = Path(data)
    if not data.is_dir():
        raise StudioError(f"{data}: no such folder")
    samples, no_pose = [], []
    for path in sorted(data.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.stem.endswith(tuple(MAP_SUFFIXES.values())):
            continue
        pose = path.with_suffix(".npz")
        if not pose.is_file():
            no_pose.append(path.name)
            continue
        caption = path.with_suffix(".txt")
        maps = {k: path.with_name(path.stem + s + ".png") for k, s in MAP_SUFFIXES.items()}
        samples.append(
            Sample(
                path,
                pose,
                caption.read_text().strip() if caption.is_file() else "",
                {k: p for k, p in maps.items() if p.is_file()},
            )
        )
    if no_pose:
        logger.warning("%d image(s) without a pose .npz skipped (e.g. %s; make one with studio pose)", len(no_pose), no_pose[0])
    if not samples:
        raise StudioError(f"{data}: no image with a pose .npz beside it (see pipelines/hyperhuman/train.py)")
    return samples


def crop_box(height: int, width: int, size: int) -> tuple[tuple[int, int], int, int]:
    """Scale so the shorter side is ``size``, then centre-crop: ((scaled h, scaled w), top, left)."""
    scale = size / min(height, width)
    h, w = max(size, round(height * scale)), max(size, round(width * scale))
    return (h, w), (h - size) // 2, (w - size) // 2


def crop_camera(camera, scaled: tuple[int, int], top: int, left: int, size: int):
    """The camera of the ``size`` square cut at (top, left) from the image scaled to ``scaled``."""
    from studio.camera import Camera

    scaled_camera = camera.resized(scaled)
    K = scaled_camera.K.clone()
    K[:, 0, 2] -= left
    K[:, 1, 2] -= top
    return Camera(K=K, extrinsics=scaled_camera.extrinsics, image_size=(size, size))


class HumanImageDataset(torch.utils.data.Dataset):
    """Training samples: the cropped image, its structure maps and caption (see the module docstring).

    An item holds "pixels" [3, S, S] in [-1, 1]; "skeleton" [3, S, S], "depth" [1, S, S] and "normal"
    [3, S, S] in [0, 1]; "size_ids" [4] (original height and width, crop top and left); "caption".
    """

    def __init__(self, samples: list[Sample], size: int, *, body_model_dir: Path | None = None):
        self.samples, self.size, self.body_model_dir = samples, size, body_model_dir

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        import dataclasses as dc

        import cv2

        from studio.body import load_body_model
        from studio.condition import HumanCondition
        from studio.media import read_image

        sample = self.samples[index]
        image = read_image(sample.image)
        pose = HumanCondition.load(sample.pose)
        if pose.num_frames != 1:
            raise StudioError(f"{sample.pose}: {pose.num_frames} frames; a training image needs a one-frame pose")
        h0, w0 = image.shape[:2]
        if tuple(pose.camera.image_size) != (h0, w0):
            pose = dc.replace(pose, camera=pose.camera.resized((h0, w0)))
        scaled, top, left = crop_box(h0, w0, self.size)
        S = self.size

        def crop(m: np.ndarray) -> np.ndarray:
            m = cv2.resize(
                m, (scaled[1], scaled[0]), interpolation=cv2.INTER_AREA if scaled[0] < m.shape[0] else cv2.INTER_LINEAR
            )
            return m[top : top + S, left : left + S]

        camera = crop_camera(pose.camera, scaled, top, left, S)
        rendered = dc.replace(pose, camera=camera).render(
            STRUCTURE_MAPS, body_model=load_body_model(pose.body_model, model_dir=self.body_model_dir)
        )
        maps = {name: rendered[name][0] for name in STRUCTURE_MAPS}
        for name, path in sample.maps.items():
            supplied = crop(read_image(path))
            maps[name] = supplied.mean(axis=2).astype(np.uint8) if name == "depth" else supplied

        def planes(m: np.ndarray) -> torch.Tensor:
            m = m[..., None] if m.ndim == 2 else m
            return torch.from_numpy(np.ascontiguousarray(m)).permute(2, 0, 1).float() / 255.0

        return {
            "pixels": planes(crop(image)) * 2.0 - 1.0,
            **{name: planes(m) for name, m in maps.items()},
            "size_ids": torch.tensor([h0, w0, top, left], dtype=torch.float32),
            "caption": sample.caption,
        }


# --- trainers ------------------------------------------------------------------------------------------


class Trainer:
    """What both stages share: accelerate, AdamW on the trainable network, one optimiser step per
    ``step(batch)``; subclasses define ``loss(batch)`` and ``save(output)``."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, frozen: list[torch.nn.Module]):
        from accelerate import Accelerator

        self.config = config
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation
        )
        device = self.accelerator.device
        for module in frozen:
            module.to(device).requires_grad_(False).eval()
        if config.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        model.requires_grad_(True).train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.999)
        )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.generator = torch.Generator("cpu").manual_seed(config.seed)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise drawn on the CPU (reproducible on every device)."""
        return torch.randn(shape, generator=generator or self.generator).to(self.device)

    def dropped(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[count] bool: which draws drop their condition (probability ``condition_dropout``)."""
        return (torch.rand(count, generator=generator or self.generator) < self.config.condition_dropout).to(self.device)

    def loss(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def step(self, batch: dict, *, generator: torch.Generator | None = None) -> float:
        with self.accelerator.accumulate(self.model):
            with self.accelerator.autocast():
                loss = self.loss(batch, generator=generator)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)


class Stage1Trainer(Trainer):
    """The Latent Structural Diffusion Model's training (see the module docstring)."""

    def __init__(self, *, unet, vae, text_encoder, tokenizer, config: TrainConfig):
        self.vae, self.text_encoder, self.tokenizer = vae, text_encoder, tokenizer
        self.scheduler = make_scheduler()
        super().__init__(unet, config, [vae, text_encoder])
        with torch.no_grad():
            self.empty_text = encode_prompt(tokenizer, text_encoder, [""])  # the dropped caption

    @torch.no_grad()
    def latents(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets [M, B, C, h, w] in the image latents' statistics, skeleton latents [B, C, h, w])."""
        unet = self.unwrapped()
        sources = {
            "rgb": batch["pixels"],
            "depth": batch["depth"].expand(-1, 3, -1, -1) * 2 - 1,
            "normal": batch["normal"] * 2 - 1,
        }
        targets = [unet.to_image_statistics(vae_encode(self.vae, sources[m].to(self.device)), m) for m in unet.modalities]
        return torch.stack(targets).float(), vae_encode(self.vae, (batch["skeleton"] * 2 - 1).to(self.device)).float()

    @torch.no_grad()
    def conditions(
        self, batch: dict, skeleton: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(text [B, L, D], skeleton latents [B, C, h, w], dropped [B]): dropped samples get the empty
        caption and a zero skeleton latent together."""
        text = encode_prompt(self.tokenizer, self.text_encoder, list(batch["caption"]))
        dropped = self.dropped(len(text), generator)
        text = torch.where(dropped[:, None, None], self.empty_text.to(text.dtype).expand_as(text), text)
        return text, skeleton * (~dropped).to(skeleton.dtype)[:, None, None, None], dropped

    def loss(self, batch: dict, *, generator: torch.Generator | None = None, parts: dict | None = None) -> torch.Tensor:
        """The sum over modalities of the v-prediction MSE (each modality's MSE into ``parts`` if given)."""
        targets, skeleton = self.latents(batch)
        text, condition, _ = self.conditions(batch, skeleton, generator=generator)
        M, B = targets.shape[:2]
        noise = self.draw(targets.shape, generator)  # independent noise per modality
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (B,), generator=generator or self.generator).to(
            self.device
        )
        steps = t.repeat(M)  # the same timestep for every modality of a sample
        noisy = self.scheduler.add_noise(targets.flatten(0, 1), noise.flatten(0, 1), steps).reshape(targets.shape)
        velocity = self.scheduler.get_velocity(targets.flatten(0, 1), noise.flatten(0, 1), steps).reshape(targets.shape)
        prediction = self.model(noisy, t, text, condition=condition, size_ids=batch["size_ids"].to(self.device))
        losses = [F.mse_loss(prediction[k].float(), velocity[k].float()) for k in range(M)]
        if parts is not None:
            parts.update({m: float(l.detach()) for m, l in zip(self.unwrapped().modalities, losses)})
        return torch.stack(losses).sum()

    @torch.no_grad()
    def measure_statistics(self, loader, batches: int) -> dict:
        """Per-channel mean and std of each modality's raw VAE latents over ``batches`` batches (of
        every process: the sums are reduced across them, so all processes agree), stored in the
        UNet's config (``latent_stats``)."""
        unet = self.unwrapped()
        unet.register_to_config(latent_stats=None)  # raw latents while measuring
        M, C = len(unet.modalities), unet.latent_channels
        moments = torch.zeros(3, M, C, dtype=torch.float64, device=self.device)  # count, sum, sum of squares
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            targets, _ = self.latents(batch)  # [M, B, C, h, w]
            z = targets.transpose(1, 2).flatten(2).double()  # [M, C, N]
            moments += torch.stack([torch.full_like(z[..., 0], z.shape[-1]), z.sum(-1), z.square().sum(-1)])
        count, total, squares = self.accelerator.reduce(moments, reduction="sum").cpu()
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(1e-8).sqrt()
        stats = {m: {"mean": mean[k].tolist(), "std": std[k].tolist()} for k, m in enumerate(unet.modalities)}
        unet.register_to_config(latent_stats=stats)
        return stats

    def save(self, output: Path, *, base: Path | None = None) -> None:
        folder = Path(output) / "hyperhuman"
        self.unwrapped().save_pretrained(folder / "unet")
        if base is not None:
            for name in ("vae", "text_encoder", "tokenizer"):
                link_folder(Path(base) / name, folder / name)
        write_config(folder / "unet" / "train_config.json", self.config)


class RefinerTrainer(Trainer):
    """The Structure-Guided Refiner's training (see the module docstring)."""

    def __init__(self, *, controlnet, unet, vae, text_encoders: list, tokenizers: list, noise_scheduler, config: TrainConfig):
        self.unet, self.vae, self.text_encoders, self.tokenizers = unet, vae, list(text_encoders), list(tokenizers)
        self.scheduler = noise_scheduler
        super().__init__(controlnet, config, [unet, vae, *self.text_encoders])
        if config.gradient_checkpointing:  # the gradient flows back through the frozen UNet too
            unet.enable_gradient_checkpointing()

    @torch.no_grad()
    def conditions(
        self, batch: dict, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(text [B, L, D], pooled [B, P], maps [B, sum C, S, S], dropped: name -> [B] bool). The caption
        ("text") and each map are dropped independently: zero embeddings, zero maps."""
        text, pooled = encode_prompt_xl(self.tokenizers, self.text_encoders, list(batch["caption"]))
        B = len(text)
        dropped = {"text": self.dropped(B, generator)}
        keep = (~dropped["text"]).to(text.dtype)
        text, pooled = text * keep[:, None, None], pooled * keep[:, None]
        planes = []
        for name in self.unwrapped().conditions:
            dropped[name] = self.dropped(B, generator)
            planes.append(batch[name].to(self.device) * (~dropped[name]).float()[:, None, None, None])
        return text, pooled, torch.cat(planes, dim=1), dropped

    def loss(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            latents = vae_encode(self.vae, batch["pixels"].to(self.device)).float()
        text, pooled, maps, _ = self.conditions(batch, generator=generator)
        B, S = len(latents), batch["pixels"].shape[-1]
        noise = self.draw(latents.shape, generator)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (B,), generator=generator or self.generator).to(
            self.device
        )
        noisy = self.scheduler.add_noise(latents, noise, t)
        size_ids = batch["size_ids"].to(self.device)
        time_ids = torch.cat([size_ids, torch.tensor([[S, S]], dtype=size_ids.dtype, device=self.device).expand(B, -1)], dim=1)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        down, mid = self.model(noisy, t, text, maps=maps, added_cond_kwargs=added)
        prediction = self.unet(
            noisy, t, text, added_cond_kwargs=added, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        target = (
            self.scheduler.get_velocity(latents, noise, t) if self.scheduler.config.prediction_type == "v_prediction" else noise
        )
        return F.mse_loss(prediction.float(), target.float())

    def save(self, output: Path, *, base: Path | None = None) -> None:
        folder = Path(output) / "hyperhuman" / "refiner"
        self.unwrapped().save_pretrained(folder / "controlnet")
        if base is not None:
            link_folder(Path(base), folder / "base")
        write_config(folder / "controlnet" / "train_config.json", self.config)


def write_config(path: Path, config: TrainConfig) -> None:
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2))


def link_folder(source: Path, target: Path) -> None:
    """``target`` as a symbolic link to ``source`` (a copy where links are not possible); kept if present."""
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source.resolve(), target, target_is_directory=True)
    except OSError:
        shutil.copytree(source, target)


# --- building from folders, and the command -------------------------------------------------------------


def stage1_trainer(config: TrainConfig, *, base: Path, init: Path | None) -> Stage1Trainer:
    """Stage 1 from SD-2-base's folder (``init``: continue a previous run's ``hyperhuman/unet``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from .model import StructuralUNet

    if init is not None:
        unet = load_pretrained(StructuralUNet, Path(init) / "hyperhuman" / "unet", "a previous train.py --stage 1 run")
    else:
        unet = StructuralUNet.from_base(load_pretrained(UNet2DConditionModel, base / "unet", f"{SD2_SOURCE} (unet/)"))
    return Stage1Trainer(
        unet=unet, vae=load_pretrained(AutoencoderKL, base / "vae", f"{SD2_SOURCE} (vae/)"),
        text_encoder=load_pretrained(CLIPTextModel, base / "text_encoder", f"{SD2_SOURCE} (text_encoder/)"),
        tokenizer=load_pretrained(CLIPTokenizer, base / "tokenizer", f"{SD2_SOURCE} (tokenizer/)"), config=config,
    )  # fmt: skip


def refiner_trainer(config: TrainConfig, *, base: Path, init: Path | None) -> RefinerTrainer:
    """The refiner from SDXL-1.0 base's folder (``init``: continue a previous run's ``hyperhuman/refiner/controlnet``)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from .model import StructureControlNet

    unet = load_pretrained(UNet2DConditionModel, base / "unet", f"{SDXL_SOURCE} (unet/)")
    if init is not None:
        controlnet = load_pretrained(
            StructureControlNet, Path(init) / "hyperhuman" / "refiner" / "controlnet", "a previous train.py --stage refiner run"
        )
    else:
        controlnet = StructureControlNet.from_unet(unet)
    return RefinerTrainer(
        controlnet=controlnet, unet=unet, vae=load_pretrained(AutoencoderKL, base / "vae", f"{SDXL_SOURCE} (vae/)"),
        text_encoders=[load_pretrained(CLIPTextModel, base / "text_encoder", SDXL_SOURCE), load_pretrained(CLIPTextModelWithProjection, base / "text_encoder_2", SDXL_SOURCE)],
        tokenizers=[load_pretrained(CLIPTokenizer, base / "tokenizer", SDXL_SOURCE), load_pretrained(CLIPTokenizer, base / "tokenizer_2", SDXL_SOURCE)],
        noise_scheduler=DDPMScheduler.from_config(ddim_from(scheduler_config(base / "scheduler")).config), config=config,
    )  # fmt: skip


def run(
    config: TrainConfig,
    *,
    data: Path,
    base: Path,
    output: Path,
    init: Path | None = None,
    body_model_dir: Path | None = None,
    workers: int = 0,
) -> list[float]:
    """Train one stage; returns the loss of every step. Checkpoints go to ``output`` (module docstring)."""
    from tqdm import tqdm

    if not Path(base).is_dir():
        raise StudioError(
            f"{base}: no such folder (--base: {SD2_SOURCE if config.stage == '1' else SDXL_SOURCE}, a diffusers folder)"
        )
    dataset = HumanImageDataset(find_samples(data), config.size, body_model_dir=body_model_dir)
    trainer = (stage1_trainer if config.stage == "1" else refiner_trainer)(config, base=Path(base), init=init)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=workers, drop_last=len(dataset) >= config.batch_size,
                                         generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    loader = trainer.accelerator.prepare(loader)
    if isinstance(trainer, Stage1Trainer) and init is None:
        trainer.measure_statistics(loader, config.stats_batches)
    main = trainer.accelerator.is_main_process
    bar = tqdm(total=config.steps, desc=f"hyperhuman {'stage 1' if config.stage == '1' else 'refiner'}", disable=not main)
    losses: list[float] = []
    while len(losses) < config.steps:
        for batch in loader:
            losses.append(trainer.step(batch))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            step = len(losses)
            if step % config.save_every == 0 or step == config.steps:
                trainer.accelerator.wait_for_everyone()
                if main:
                    trainer.save(output, base=Path(base))
            if step >= config.steps:
                break
    bar.close()
    return losses


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        description="Train HyperHuman: stage 1 (latent structural diffusion) or the structure-guided refiner."
    )
    parser.add_argument("--stage", choices=("1", "refiner"), required=True)
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of <stem>.jpg + <stem>.txt + <stem>.npz (+ _depth.png, _normal.png)"
    )
    parser.add_argument(
        "--base", type=Path, required=True, help=f"diffusers folder: {SD2_SOURCE} (stage 1) or {SDXL_SOURCE} (refiner)"
    )
    parser.add_argument("--output", type=Path, required=True, help="weights root: writes OUTPUT/hyperhuman/...")
    parser.add_argument("--init", type=Path, default=None, help="continue from this weights root's hyperhuman/ networks")
    parser.add_argument(
        "--size", type=int, default=None, help="training crop side (default 512 for stage 1, 1024 for the refiner)"
    )
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--gradient-accumulation", type=int, default=defaults.gradient_accumulation)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=defaults.mixed_precision)
    parser.add_argument("--condition-dropout", type=float, default=None)
    parser.add_argument("--save-every", type=int, default=defaults.save_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--body-model-dir", type=Path, default=None, help="SMPL-X/SMPL files for poses fitted with those bodies")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = TrainConfig(
            stage=args.stage, size=args.size or (512 if args.stage == "1" else 1024), batch_size=args.batch_size, learning_rate=args.lr, steps=args.steps,
            gradient_accumulation=args.gradient_accumulation, mixed_precision=args.mixed_precision, condition_dropout=args.condition_dropout,
            save_every=args.save_every, seed=args.seed, gradient_checkpointing=not args.no_gradient_checkpointing,
        )  # fmt: skip
        losses = run(
            config,
            data=args.data,
            base=args.base,
            output=args.output,
            init=args.init,
            body_model_dir=args.body_model_dir,
            workers=args.workers,
        )
    except (StudioError, ValueError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    logger.info("trained %d steps; last loss %.4f; weights in %s", len(losses), losses[-1], args.output / "hyperhuman")
    return 0


if __name__ == "__main__":
    sys.exit(main())
