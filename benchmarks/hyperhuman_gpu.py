"""HyperHuman and the ControlNet path at real size with random weights: seconds per image and peak GPU memory.

Builds every network at its published size with random weights (no download; speed and memory do not
depend on the values):
- ``hyperhuman``: stage 1, a StructuralUNet around SD-2-base's UNet (three experts), SD's VAE and
  OpenCLIP ViT-H, at 512x512, 50 DDIM steps, CFG 7.5 (the paper's evaluation settings);
- ``refiner``: stage 2 alone, SDXL-1.0 base with the structure ControlNet, at 1024x1024, 50 steps;
- ``controlnet``: SD 1.5 with the OpenPose, depth and normal ControlNets, at 512x512, 50 steps.

The structure maps are drawn synthetically (their values do not change the cost). Each measurement
follows one warm-up image. Prints, last, one line per pipeline:
`pipeline=hyperhuman size=512 steps=50 s_per_image=... peak_gb=...`.

    python benchmarks/hyperhuman_gpu.py                                  # CUDA fp16: hyperhuman and controlnet
    python benchmarks/hyperhuman_gpu.py --pipelines hyperhuman refiner controlnet
    python benchmarks/hyperhuman_gpu.py --device cpu --steps 1 --size 128 --pipelines hyperhuman   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipelines.hyperhuman import HyperHumanConfig, HyperHumanPipeline
from pipelines.hyperhuman import random_weights as rw
from pipelines.hyperhuman.controlnet import ControlNetConfig, ControlNetPipeline


def synthetic_maps(size: int) -> dict[str, np.ndarray]:
    """A stick figure's skeleton, a depth blob and a normal blob, uint8, ``size`` square."""
    import cv2

    skeleton = np.zeros((size, size, 3), np.uint8)
    s = size / 512
    points = [
        (256, 80),
        (256, 160),
        (190, 170),
        (322, 170),
        (170, 270),
        (342, 270),
        (226, 300),
        (286, 300),
        (216, 420),
        (296, 420),
        (210, 500),
        (300, 500),
    ]
    points = [(int(x * s), int(y * s)) for x, y in points]
    for a, b in [(0, 1), (1, 2), (1, 3), (2, 4), (3, 5), (1, 6), (1, 7), (6, 8), (7, 9), (8, 10), (9, 11)]:
        cv2.line(skeleton, points[a], points[b], (255, 85 * (a % 3), 255 - 60 * (b % 4)), max(1, int(6 * s)))
    yy, xx = np.mgrid[:size, :size] / size
    body = ((xx - 0.5) ** 2 / 0.04 + (yy - 0.55) ** 2 / 0.16) < 1
    depth = np.where(body, 255 - 120 * (yy - 0.2), 0).clip(0, 255).astype(np.uint8)
    normal = np.where(
        body[..., None], np.stack([128 + 100 * (xx - 0.5), 128 - 50 * (yy - 0.5), np.full_like(xx, 230)], -1), 0
    ).astype(np.uint8)
    return {"skeleton": skeleton, "depth": depth, "normal": normal}


def build(name: str, device: torch.device, dtype: torch.dtype, steps: int):
    """The pipeline and a function drawing one image with it."""
    with torch.device(device):  # random init straight on the device
        if name == "hyperhuman":
            pipe = HyperHumanPipeline(**rw.hyperhuman_components("full"), config=HyperHumanConfig(steps=steps)).to(device, dtype)
            return lambda maps, seed: pipe.sample_structure(maps["skeleton"], "a person", seed=seed)["rgb"]
        if name == "refiner":
            from pipelines.hyperhuman.model import StructureControlNet
            from pipelines.hyperhuman.refiner import StructureGuidedRefiner, ddim_from

            xl = rw.sdxl_components("full")
            refiner = StructureGuidedRefiner(
                unet=xl["unet"], controlnet=StructureControlNet.from_unet(xl["unet"]), vae=xl["vae"], text_encoders=[xl["text_encoder"], xl["text_encoder_2"]],
                tokenizers=[xl["tokenizer"], xl["tokenizer_2"]], scheduler=ddim_from(dict(xl["scheduler"].config)),
            ).to(device, dtype)  # fmt: skip
            return lambda maps, seed: refiner("a person", maps, steps=steps, seed=seed)
        from diffusers import StableDiffusionControlNetPipeline

        sd = rw.sd_components("sd15", "full")
        nets = list(rw.controlnet_models(sd["unet"]).values())
        for module in [sd["unet"], sd["vae"], sd["text_encoder"], *nets]:
            torch.nn.Module.to(module, dtype=dtype)
        diffusers_pipe = StableDiffusionControlNetPipeline(
            **sd, controlnet=nets, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        diffusers_pipe.set_progress_bar_config(disable=True)
        pipe = ControlNetPipeline(diffusers_pipe, ["openpose", "depth", "normal"], config=ControlNetConfig(steps=steps))
        return lambda maps, seed: pipe(maps, "a person", seed=seed)


def measure(name: str, device: torch.device, dtype: torch.dtype, *, size: int, steps: int, repeats: int) -> str:
    start = time.perf_counter()
    draw = build(name, device, dtype, steps)
    built = time.perf_counter() - start
    maps = synthetic_maps(size)
    draw(maps, 0)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for seed in range(1, repeats + 1):
        image = draw(maps, seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    assert image.shape == (size, size, 3)
    return f"pipeline={name} size={size} steps={steps} dtype={str(dtype).removeprefix('torch.')} built_s={built:.1f} s_per_image={seconds:.2f} peak_gb={peak:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--pipelines", nargs="+", choices=("hyperhuman", "refiner", "controlnet"), default=["hyperhuman", "controlnet"]
    )
    parser.add_argument("--size", type=int, default=None, help="square side (default 512; the refiner 1024)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="timed images after the warm-up")
    parser.add_argument("--fp32", action="store_true", help="float32 instead of float16 on CUDA")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (use --device cpu for a smoke run)")
        return
    dtype = torch.float16 if device.type == "cuda" and not args.fp32 else torch.float32
    lines = []
    for name in args.pipelines:
        size = args.size or (1024 if name == "refiner" else 512)
        lines.append(measure(name, device, dtype, size=size, steps=args.steps, repeats=args.repeats))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
