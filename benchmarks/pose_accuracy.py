"""3D accuracy of `studio pose` on real photos with ground truth: four Human3.6M frames.

Reads ../shared/media/eval_h36m/ (evaluation only: Human3.6M is licensed for academic research and
is never copied into this repository; the benchmark says so and stops when the folder is absent).
Each frame goes through what `studio pose IMAGE` runs (detection, hands and face, focal estimation,
the fit with the silhouette and the pose prior) on the Anny body. Scored: PA-MPJPE (similarity
Procrustes per frame, then the mean distance) over the 12 limb joints (hips, knees, ankles,
shoulders, elbows, wrists) against Human3.6M's 3D joints, for
- the fitted body's joints (`pa_mpjpe_mm=`),
- MediaPipe's raw world landmarks from a plain run on the whole frame (`mediapipe_raw_pa_mpjpe_mm=`),
- the landmarks studio's estimator hands the fitter (mirror-averaged), for reference.
Human3.6M's hip joints sit wider than the body model's and MediaPipe's; nothing here corrects for that.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "media" / "eval_h36m"
# Human3.6M 17-joint indices and studio's names of the 12 limb joints, in the same order.
H36M_LIMBS = [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16]
STUDIO_LIMBS = [
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--body", default="anny")
    args = parser.parse_args()
    if not (args.data / "test_h36m_body3d.npz").is_file():
        print(f"skipped: {args.data} is absent (the Human3.6M evaluation frames live in ../shared/media/eval_h36m/ only)")
        return

    from studio.body import load_body_model
    from studio.body.joints import JOINT_INDEX
    from studio.capture import pose_image
    from studio.fit.evaluation import pa_mpjpe, procrustes_aligned
    from studio.media import read_image
    from studio.pose import load_estimator
    from studio.pose.mediapipe_estimator import MediaPipeEstimator

    truth = np.load(args.data / "test_h36m_body3d.npz")
    ids = [JOINT_INDEX[n] for n in STUDIO_LIMBS]
    model = load_body_model(args.body)
    estimator = load_estimator(hands=True, face=True)
    plain = MediaPipeEstimator(search=False, refine=False, flip_average=False)
    fitted, raw, averaged, per_joint = [], [], [], []
    for i, name in enumerate(truth["imgname"]):
        image = read_image(args.data / Path(str(name)).name)
        gt = truth["S"][i][H36M_LIMBS, :3][None]
        start = time.perf_counter()
        result = pose_image(image, body_model=model, estimator=estimator)
        seconds = time.perf_counter() - start
        pred = result.condition.joints3d(model)[0].numpy()[ids][None]
        raw_kp = plain.estimate_image(image, mask=False)
        fitted.append(pa_mpjpe(pred, gt) * 1000)
        per_joint.append(np.linalg.norm(procrustes_aligned(pred, gt) - gt, axis=-1)[0] * 1000)
        raw.append(pa_mpjpe(raw_kp.world[0][ids][None], gt) * 1000)
        averaged.append(pa_mpjpe(result.keypoints.world[0][ids][None], gt) * 1000)
        print(
            f"{Path(str(name)).name}: fit {fitted[-1]:.1f} mm, MediaPipe raw {raw[-1]:.1f} mm, mirror-averaged {averaged[-1]:.1f} mm; "
            f"{result.focal.describe(image.shape[:2])}; {seconds:.1f} s"
        )
    print(f"frames={len(fitted)} joints=12 (hips, knees, ankles, shoulders, elbows, wrists), body {args.body}")
    joint_error = np.mean(per_joint, axis=0)
    groups = {g: [i for i, n in enumerate(STUDIO_LIMBS) if n.endswith(g)] for g in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")}
    print("fit error by joint (mm): " + ", ".join(f"{g}s {joint_error[ids].mean():.0f}" for g, ids in groups.items()))
    print(f"mirror_averaged_pa_mpjpe_mm={np.mean(averaged):.1f}")
    print(f"mediapipe_raw_pa_mpjpe_mm={np.mean(raw):.1f}")
    print(f"pa_mpjpe_mm={np.mean(fitted):.1f}")


if __name__ == "__main__":
    main()
