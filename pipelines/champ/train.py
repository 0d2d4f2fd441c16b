"""Champ's two training stages, with accelerate, on a folder of frames plus HumanConditions.

- Stage 1 (single frames): the reference UNet, the denoising UNet (without motion modules) and the
  guidance encoders learn to redraw a frame of a clip from another frame of the same clip (the
  reference) and the target frame's guidance maps.
- Stage 2 (clips): motion modules are added to the stage-1 denoising UNet and only they train, on
  ``frames`` consecutive frames.

The loss is the v-prediction MSE under Champ's noise schedule. A fraction of samples is trained
unconditionally, as Champ's training scripts do, so that classifier-free guidance works at sampling
time: their CLIP input is zeroed and they get no reference features (the reference UNet does not run
for them; their self-attention is plain).

Data layout (one folder per clip)::

    DATA/<clip>/frames/00000.png ...   the frames (png or jpg), sorted by name
    DATA/<clip>/condition.npz          ``studio pose <clip video> -o condition.npz``: one body per frame

Initial weights (``--weights DIR``, the layout in ``weights``): the VAE and the CLIP image encoder
always come from there. The networks come from ``DIR/champ/`` when present (fine-tuning Champ), else
stage 1 starts both UNets from ``DIR/stable-diffusion-v1-5/unet`` (as Champ did). ``--init DIR`` loads a
previous stage's output (stage 2 starts from stage 1's). Outputs go to ``--output DIR/champ/`` in the
official layout (as .safetensors), so ``ChampPipeline.from_pretrained`` and ``studio animate --backend
champ`` read them once the VAE and image encoder folders sit beside them.

    python -m pipelines.champ.train --stage 1 --data DATA --weights WEIGHTS --output runs/stage1
    python -m pipelines.champ.train --stage 2 --data DATA --weights WEIGHTS --init runs/stage1 --output runs/stage2

Several GPUs and several machines: the script is an accelerate program (``Accelerator`` prepares the
networks, the optimiser and the data loader; gradients are averaged across processes; only the main
process writes checkpoints), so start it with ``accelerate launch`` instead of ``python``. One machine
with 8 GPUs::

    accelerate launch --multi_gpu --num_processes 8 -m pipelines.champ.train --stage 1 --data DATA --weights WEIGHTS --output runs/stage1

Two machines with 8 GPUs each (run the same line on both, ``--machine_rank 0`` on the one whose
address is ``--main_process_ip``; DATA, WEIGHTS and the output folder must be the same paths on both,
e.g. a shared file system)::

    accelerate launch --multi_gpu --num_machines 2 --num_processes 16 --machine_rank 0 \
        --main_process_ip 10.0.0.1 --main_process_port 29500 -m pipelines.champ.train --stage 1 --data DATA --weights WEIGHTS --output runs/stage1

``torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --master_addr 10.0.0.1 --master_port 29500 -m
pipelines.champ.train ...`` is equivalent, and so is a SLURM job that runs either on every node. The
batch size given is per process (the effective batch is it times the number of processes); mixed
precision comes from ``--mixed-precision`` (or ``accelerate config``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from studio.errors import StudioError

from .model import GuidanceEncoder, ReferenceBank, VideoUNet, build_networks, encode_guidance
from .pipeline import clip_pixels, render_guidance, shift_camera
from .config import GUIDANCE_TYPES, ChampModelConfig
from .weights import SUBFOLDERS, checkpoint_file, find_root, load_champ_files, model_config, save_checkpoints

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (saved beside the checkpoints)."""

    stage: int = 1
    """1: single frames, everything but the motion modules; 2: clips, the motion modules only."""
    size: tuple[int, int] = (512, 512)
    """(height, width) of training images; frames are centre-cropped to this aspect."""
    frames: int = 24
    """Frames per clip in stage 2 (stage 1 uses 1)."""
    batch_size: int = 1
    learning_rate: float = 1e-5
    steps: int = 30000
    gradient_accumulation: int = 1
    mixed_precision: str = "no"
    """"no", "fp16" or "bf16" (accelerate)."""
    uncond_probability: float = 0.1
    """Fraction of samples trained unconditionally (for classifier-free guidance): zeroed CLIP input
    pixels and no reference features."""
    save_every: int = 2000
    seed: int = 0
    gradient_checkpointing: bool = True
    """Recompute the UNets' activations in the backward pass (less memory, ~30% slower)."""


def noise_scheduler() -> DDPMScheduler:
    """Champ's training schedule: linear betas 0.00085-0.012 rescaled to zero terminal SNR, v-prediction."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False, steps_offset=1,
        prediction_type="v_prediction", rescale_betas_zero_snr=True,
    )


class ChampTrainingModel(nn.Module):
    """The trainable networks in one module (so accelerate/DDP sees one forward)."""

    def __init__(self, reference_unet: nn.Module, denoising_unet: VideoUNet, guidance_encoders: dict[str, GuidanceEncoder]):
        super().__init__()
        self.reference_unet = reference_unet
        self.denoising_unet = denoising_unet
        self.guidance_encoders = nn.ModuleDict(guidance_encoders)
        self.reference_bank = ReferenceBank(reference_unet, denoising_unet.unet)

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        reference: torch.Tensor,
        tokens: torch.Tensor,
        maps: torch.Tensor,
        *,
        conditional: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The v-prediction [B, 4, F, h, w].

        Args:
            noisy: noisy latents [B, 4, F, h, w].
            timesteps: [B].
            reference: reference latents [B, 4, h, w].
            tokens: CLIP tokens [B, 1, D].
            maps: guidance maps in [0, 1] [B, 12, F, H, W].
            conditional: [B] bool, False for the samples trained unconditionally: the reference UNet
                skips them and their self-attention reads no reference features. None: all True.
        """
        self.reference_bank.clear()
        readers = None if conditional is None or conditional.all() else conditional
        if readers is None:
            self.reference_unet(reference, torch.zeros_like(timesteps), tokens, return_dict=False)
        elif readers.any():
            self.reference_unet(reference[readers], torch.zeros_like(timesteps[readers]), tokens[readers], return_dict=False)
        self.reference_bank.readers = None if readers is None else readers.cpu()
        guidance = encode_guidance(self.guidance_encoders, maps, GUIDANCE_TYPES)
        # The reference features and readers stay in the bank until the next forward: gradient
        # checkpointing re-runs the denoising UNet's attention layers during the backward pass.
        return self.denoising_unet(noisy, timesteps, tokens, guidance=guidance)


class ChampTrainer:
    """One stage of training: ``step(batch)`` returns the loss; ``save(folder)`` writes checkpoints.

    A batch holds "target" [B, 3, F, H, W] and "reference" [B, 3, H, W] in [-1, 1], "clip" [B, 3, S, S]
    (CLIP-normalised reference) and "guidance" [B, 12, F, H, W] in [0, 1].
    """

    def __init__(self, *, vae, image_encoder, model: ChampTrainingModel, config: TrainConfig, model_config: ChampModelConfig):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.config, self.model_config = config, model_config
        # In stage 1 some trained parameters get no gradient in a step: the reference UNet when every
        # sample is unconditional, and the layers after its last self-attention input always.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=config.stage == 1)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation, kwargs_handlers=[ddp],
        )
        device = self.accelerator.device
        self.vae = vae.to(device).requires_grad_(False).eval()
        self.image_encoder = image_encoder.to(device).requires_grad_(False).eval()
        if config.stage == 2 and model.denoising_unet.motion_config is None:
            model.denoising_unet.add_motion_modules(model_config.motion)
        if config.gradient_checkpointing:
            model.reference_unet.enable_gradient_checkpointing()
            model.denoising_unet.unet.enable_gradient_checkpointing()
        model.requires_grad_(False)
        trainable = model.denoising_unet.motion_parameters() if config.stage == 2 else [
            p for name, p in model.named_parameters() if "motion_modules" not in name
        ]
        for p in trainable:
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=1e-2)
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.scheduler = noise_scheduler()
        self.generator = torch.Generator("cpu").manual_seed(config.seed)

    @property
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, batch: dict[str, torch.Tensor], *, generator: torch.Generator | None = None) -> torch.Tensor:
        generator = generator or self.generator
        device = self.accelerator.device
        scale = self.vae.config.scaling_factor
        target = batch["target"].to(device)
        b, _, f, h, w = target.shape
        with torch.no_grad():
            frames = target.transpose(1, 2).reshape(b * f, 3, h, w)
            latents = self.vae.encode(frames).latent_dist.mean * scale
            latents = latents.reshape(b, f, *latents.shape[1:]).transpose(1, 2)  # [B, 4, F, h, w]
            reference = self.vae.encode(batch["reference"].to(device)).latent_dist.mean * scale
            conditional = (torch.rand(b, generator=generator) >= self.config.uncond_probability).to(device)
            clip = batch["clip"].to(device) * conditional[:, None, None, None]  # Champ zeroes the unconditional CLIP input
            tokens = self.image_encoder(clip).image_embeds[:, None]
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        velocity = self.scheduler.get_velocity(latents, noise, t)
        with self.accelerator.autocast():
            prediction = self.model(noisy, t, reference, tokens, batch["guidance"].to(device), conditional=conditional)
        return F.mse_loss(prediction.float(), velocity.float())

    def step(self, batch: dict[str, torch.Tensor], *, generator: torch.Generator | None = None) -> float:
        with self.accelerator.accumulate(self.model):
            loss = self.loss(batch, generator=generator)
            self.accelerator.backward(loss)
            if self.accelerator.sync_gradients:
                self.accelerator.clip_grad_norm_(self.trainable_parameters, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def save(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model)
        modules = {"reference_unet": model.reference_unet, "denoising_unet": model.denoising_unet}
        modules.update({f"guidance_encoder_{g}": e for g, e in model.guidance_encoders.items()})
        save_checkpoints(folder, modules, self.model_config)
        (folder / "train_config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=2))


class ClipDataset(torch.utils.data.Dataset):
    """Training samples from ``DATA/<clip>/{frames/, condition.npz}`` (see the module docstring)."""

    def __init__(self, root: str | Path, *, size: tuple[int, int], frames: int, clip_size: int, body_model=None, length: int = 10**6):
        root = Path(root)
        self.size, self.frames, self.clip_size, self.body_model, self.length = size, frames, clip_size, body_model, length
        self.clips = []
        from studio.condition import HumanCondition
        from studio.media import IMAGE_SUFFIXES

        for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            images = sorted(p for p in (folder / "frames").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not (folder / "condition.npz").is_file() or not images:
                logger.warning("%s: skipped (needs frames/ and condition.npz)", folder)
                continue
            condition = HumanCondition.load(folder / "condition.npz")
            if condition.num_frames != len(images):
                raise StudioError(f"{folder}: {len(images)} frames but condition.npz has {condition.num_frames}")
            if len(images) < frames:
                logger.warning("%s: skipped (fewer than %d frames)", folder, frames)
                continue
            self.clips.append((images, condition))
        if not self.clips:
            raise StudioError(f"{root}: no usable clips (each needs frames/ and condition.npz; see pipelines/champ/train.py)")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from studio.media import read_image

        rng = np.random.default_rng(index)
        images, condition = self.clips[rng.integers(len(self.clips))]
        start = int(rng.integers(len(images) - self.frames + 1))
        ref_index = int(rng.integers(len(images)))
        h, w = self.size
        h0, w0 = condition.camera.image_size
        if w0 * h > w * h0:  # the frames are wider than the training size: crop the sides
            crop_h, crop_w = h0, min(w0, round(h0 * w / h))
        else:
            crop_h, crop_w = min(h0, round(w0 * h / w)), w0
        top, left = (h0 - crop_h) // 2, (w0 - crop_w) // 2

        def load(i: int) -> np.ndarray:  # [H, W, 3] uint8
            import cv2

            image = read_image(images[i])
            if image.shape[:2] != (h0, w0):
                image = cv2.resize(image, (w0, h0), interpolation=cv2.INTER_AREA)
            return cv2.resize(image[top : top + crop_h, left : left + crop_w], (w, h), interpolation=cv2.INTER_AREA)

        def to_tensor(image: np.ndarray) -> torch.Tensor:  # [3, H, W] in [-1, 1]
            return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0

        clip = condition[start : start + self.frames]
        camera = shift_camera(clip.camera, -left, -top, (crop_h, crop_w)).resized((h, w))
        maps = render_guidance(clip, camera, body_model=self.body_model)  # [F, 12, H, W]
        reference = load(ref_index)
        return {
            "target": torch.stack([to_tensor(load(i)) for i in range(start, start + self.frames)], dim=1),
            "reference": to_tensor(reference),
            "clip": clip_pixels(reference, self.clip_size)[0],
            "guidance": torch.from_numpy(maps).float().div(255.0).transpose(0, 1),
        }


def load_networks(weights: Path, init: Path | None, stage: int) -> tuple[ChampTrainingModel, ChampModelConfig]:
    """The trainable networks from a previous stage (``init``), Champ's release, or SD 1.5's UNet."""
    source = find_root(init or weights)
    config = model_config(source)
    champ_files = (source / "champ").is_dir()
    has_motion = champ_files and checkpoint_file(source / "champ", "motion_module") is not None
    with torch.device("meta") if champ_files else torch.device("cpu"):
        reference, denoising, encoders = build_networks(config, motion=has_motion)
    if champ_files:
        load_champ_files(source, reference, denoising, encoders)
    else:
        if stage == 2:
            raise StudioError(f"{source}: stage 2 starts from stage 1's output (--init DIR with champ/)")
        sd_unet = weights / "stable-diffusion-v1-5" / "unet"
        if not sd_unet.is_dir():
            raise StudioError(f"{weights}: needs champ/ (Champ's release) or stable-diffusion-v1-5/unet/ (SD 1.5) to start from")
        from diffusers import UNet2DConditionModel

        state = UNet2DConditionModel.from_pretrained(sd_unet, local_files_only=True).state_dict()
        denoising.unet.load_state_dict(state)
        reference.load_state_dict({k: v for k, v in state.items() if not k.startswith(("conv_norm_out", "conv_out"))})
    return ChampTrainingModel(reference, denoising, encoders), config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train Champ (stage 1: single frames; stage 2: motion modules on clips).")
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--data", type=Path, required=True, help="folder of clips: <clip>/frames/*.png + <clip>/condition.npz")
    parser.add_argument("--weights", type=Path, required=True, help="folder with sd-vae-ft-mse/, image_encoder/ and champ/ or stable-diffusion-v1-5/unet/")
    parser.add_argument("--init", type=Path, default=None, help="a previous stage's --output folder")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--size", type=int, nargs=2, default=TrainConfig().size, metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--frames", type=int, default=TrainConfig.frames)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--save-every", type=int, default=TrainConfig.save_every)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = TrainConfig(
        stage=args.stage, size=tuple(args.size), frames=args.frames if args.stage == 2 else 1, batch_size=args.batch_size, learning_rate=args.lr,
        steps=args.steps, mixed_precision=args.mixed_precision, save_every=args.save_every,
    )
    try:
        run(config, data=args.data, weights=args.weights, init=args.init, output=args.output)
    except StudioError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run(config: TrainConfig, *, data: Path, weights: Path, init: Path | None, output: Path) -> None:
    from diffusers import AutoencoderKL
    from tqdm import tqdm
    from transformers import CLIPVisionModelWithProjection

    from .pipeline import _load_pretrained

    vae = _load_pretrained(AutoencoderKL, weights / SUBFOLDERS["vae"])
    image_encoder = _load_pretrained(CLIPVisionModelWithProjection, weights / SUBFOLDERS["image_encoder"])
    model, model_cfg = load_networks(weights, init, config.stage)
    dataset = ClipDataset(data, size=config.size, frames=config.frames, clip_size=image_encoder.config.image_size, length=config.steps * config.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True)
    trainer = ChampTrainer(vae=vae, image_encoder=image_encoder, model=model, config=config, model_config=model_cfg)
    loader = trainer.accelerator.prepare(loader)
    bar = tqdm(total=config.steps, desc=f"champ stage {config.stage}", disable=not trainer.accelerator.is_main_process)
    for step, batch in enumerate(loader, start=1):
        loss = trainer.step(batch)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if trainer.accelerator.is_main_process and (step % config.save_every == 0 or step == config.steps):
            trainer.save(output)
        if step >= config.steps:
            break
    bar.close()


if __name__ == "__main__":
    sys.exit(main())
