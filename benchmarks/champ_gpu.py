"""Champ at real size with random weights: seconds per frame and peak GPU memory, by video length.

Builds every network at the released sizes (SD 1.5 UNets with motion modules, four guidance encoders,
the sd-vae-ft-mse VAE, CLIP ViT-L/14) with random weights, so no download is needed; speed and memory
do not depend on the values. Guidance comes from the bundled procedural walk, looped to each length.
Prints one line per length: `frames=24 s_per_frame=... peak_gpu_gib=...`.

    python benchmarks/champ_gpu.py                       # CUDA, fp16, 512x512, 24 and 96 frames, 20 steps
    python benchmarks/champ_gpu.py --offload             # with model CPU offload
    python benchmarks/champ_gpu.py --device cpu --frames 4 --steps 1 --size 128   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pipelines.champ import ChampConfig, ChampModelConfig, ChampPipeline, build_networks, make_scheduler
from studio.body import load_body_model
from studio.condition import HumanCondition

ROOT = Path(__file__).resolve().parents[1]


def real_size_pipeline(device: torch.device, dtype: torch.dtype) -> ChampPipeline:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device(device):  # random init straight on the device
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=256,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )
        clip = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24, image_size=224, patch_size=14, projection_dim=768)
        image_encoder = CLIPVisionModelWithProjection(clip)
        reference, denoising, encoders = build_networks(ChampModelConfig())
        pipe = ChampPipeline(
            vae=vae, image_encoder=image_encoder, reference_unet=reference, denoising_unet=denoising, guidance_encoders=encoders, scheduler=make_scheduler(),
        )
    return pipe.to(device, dtype)


def looped(condition: HumanCondition, frames: int) -> HumanCondition:
    return condition[[i % condition.num_frames for i in range(frames)]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--frames", type=int, nargs="+", default=[24, 96])
    parser.add_argument("--size", type=int, default=512, help="square output side")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fp32", action="store_true", help="float32 instead of float16 on CUDA")
    parser.add_argument("--offload", action="store_true", help="model CPU offload (accelerate)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (use --device cpu for a smoke run)")
        return
    dtype = torch.float16 if device.type == "cuda" and not args.fp32 else torch.float32
    start = time.perf_counter()
    pipe = real_size_pipeline(device, dtype)
    if args.offload:
        pipe.enable_model_cpu_offload()
    print(f"built real-size random networks on {device} ({dtype}) in {time.perf_counter() - start:.1f} s")
    body = load_body_model("anny")
    walk = HumanCondition.load(ROOT / "assets" / "motions" / "walk.npz")
    reference = (torch.rand(args.size, args.size, 3) * 255).to(torch.uint8).numpy()
    config = ChampConfig(steps=args.steps)
    for frames in args.frames:
        condition = looped(walk, frames)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = pipe(reference, condition, height=args.size, width=args.size, config=config, body_model=body)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        print(f"frames={frames} size={args.size} steps={args.steps} s_per_frame={seconds / frames:.3f} total_s={seconds:.1f} peak_gpu_gib={peak:.2f} out={tuple(out.frames.shape)}")


if __name__ == "__main__":
    main()
