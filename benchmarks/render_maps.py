"""Guidance-map rendering speed: all five maps at 512x512 for a moving body.

Renders the bundled walk (looped to --frames frames) through HumanCondition.iter_render, the path
`studio render` and every pipeline use: body-model forward, rasterisation, skeleton drawing and map
encoding, everything but writing files. Prints figures; the last line is `render_maps_fps=<fps>`.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from studio.body import load_body_model
from studio.condition import Camera, HumanCondition

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=32)
    args = parser.parse_args()

    walk = HumanCondition.load(ROOT / "assets/motions/walk.npz")
    frames = torch.arange(args.frames) % walk.num_frames
    cond = walk[frames]
    square = Camera.look_at((0.0, 0.0, 2.9), (0.0, -0.05, 0.0), image_size=(args.size, args.size), num_frames=args.frames)
    cond = HumanCondition(cond.body_model, cond.body, square, fps=cond.fps)
    model = load_body_model(cond.body_model)
    next(cond[:1].iter_render(size=args.size, body_model=model))  # warm-up: context, shaders

    start = time.perf_counter()
    n = 0
    for chunk in cond.iter_render(size=args.size, body_model=model, chunk_size=args.chunk):
        n += len(chunk["depth"])
    elapsed = time.perf_counter() - start
    print(f"frames={n} size={args.size}x{args.size} maps=depth,normal,semantic,skeleton,mask")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak_rss_mb={peak_mb:.0f}")
    print(f"torch_threads={torch.get_num_threads()} seconds={elapsed:.2f} ms_per_frame={1000 * elapsed / n:.1f}")
    print(f"render_maps_fps={n / elapsed:.1f}")


if __name__ == "__main__":
    main()
