"""Fitting accuracy against known ground truth, on real motion capture.

Poses the Anny body with the CMU mocap in ../shared/media (or the bundled run in assets/media),
places it 4 m in front of the fitting camera (640x480 pixels, default focal length), projects its
joints, and hands them to the fitter as an estimator would: MediaPipe's 33-landmark set, Gaussian
pixel noise, noisy metric 3D landmarks, a fraction of keypoints dropped. Reports the error of the
22 SMPL-X body joints against the truth: MPJPE (pelvis-aligned) and PA-MPJPE (after a similarity
Procrustes alignment per frame). Prints figures; the last lines are `mpjpe_mm=` and `pa_mpjpe_mm=`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from studio.body import load_body_model
from studio.fit import BodyFitter, FitConfig
from studio.fit.evaluation import EVAL_JOINTS, mpjpe, pa_mpjpe, synthetic_keypoints
from studio.motion import import_motion

ROOT = Path(__file__).resolve().parents[1]


def motions() -> list[Path]:
    shared = ROOT.parent / "shared" / "media"
    found = sorted(shared.glob("cmu_*.bvh"))
    return found or sorted((ROOT / "assets" / "media").glob("cmu_*.bvh"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise-px", type=float, default=3.0, help="2D keypoint noise (std, pixels; the body is ~260 px tall)")
    parser.add_argument("--world-noise-cm", type=float, default=3.0, help="3D landmark noise (std, cm)")
    parser.add_argument("--dropout", type=float, default=0.1, help="fraction of keypoints missed")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--distance", type=float, default=4.0, help="metres from the camera")
    args = parser.parse_args()
    model = load_body_model("anny")
    errors, pa_errors, frames, seconds = [], [], 0, 0.0
    for i, path in enumerate(motions()):
        motion = import_motion(path, model, fps=args.fps)
        fitter = BodyFitter(model, FitConfig())
        camera = fitter.camera((640, 480), motion.num_frames)
        body = dict(motion.body)
        body["transl"] = body["transl"] + torch.tensor([0.0, 0.0, -args.distance])
        truth = dataclasses.replace(motion, body=body, camera=camera)
        kp = synthetic_keypoints(
            truth, model, noise_px=args.noise_px, world_noise_m=args.world_noise_cm / 100, dropout=args.dropout, seed=i
        )
        start = time.perf_counter()
        fitted = fitter.fit(kp)
        seconds += time.perf_counter() - start
        gt = truth.joints3d(model)[:, EVAL_JOINTS].numpy()
        pred = fitted.joints3d(model)[:, EVAL_JOINTS].numpy()
        e, pa = mpjpe(pred, gt) * 1000, pa_mpjpe(pred, gt) * 1000
        print(f"{path.name}: {motion.num_frames} frames, MPJPE {e:.1f} mm, PA-MPJPE {pa:.1f} mm")
        errors.append(e * motion.num_frames)
        pa_errors.append(pa * motion.num_frames)
        frames += motion.num_frames
    print(f"noise {args.noise_px} px, 3D noise {args.world_noise_cm} cm, dropout {args.dropout:.0%}; fit {frames / seconds:.1f} frames/s")
    print(f"mpjpe_mm={np.sum(errors) / frames:.1f}")
    print(f"pa_mpjpe_mm={np.sum(pa_errors) / frames:.1f}")


if __name__ == "__main__":
    main()
