"""Make assets/motions/walk.npz: a procedural two-second walk cycle on the anny body, turning slowly.

It is the bundled motion `studio render` is shown with before any pose estimation is involved. Run:
    python scripts/make_sample_motion.py [OUT.npz]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from studio.body.base import axis_angle_to_matrix, matrix_to_axis_angle
from studio.body.joints import JOINT_INDEX
from studio.condition import Camera, HumanCondition

FPS = 30
SECONDS = 2.0


def walk_cycle(num_frames: int, fps: float) -> dict[str, torch.Tensor]:
    """SMPL-X pose fields of a walk in place at one stride per second: [T, D] each."""
    t = torch.arange(num_frames, dtype=torch.float32) / fps
    phase = 2 * math.pi * t  # one stride (two steps) per second
    body = torch.zeros(num_frames, 21, 3)

    def set_joint(name: str, rotvec: torch.Tensor) -> None:
        body[:, JOINT_INDEX[name] - 1] = rotvec

    def about(axis: int, angle: torch.Tensor) -> torch.Tensor:
        v = torch.zeros(num_frames, 3)
        v[:, axis] = angle
        return v

    swing = torch.sin(phase)
    set_joint("left_hip", about(0, -0.45 * swing))
    set_joint("right_hip", about(0, 0.45 * swing))
    # The knee bends most while its leg swings forward.
    set_joint("left_knee", about(0, 0.1 + 0.7 * torch.relu(torch.sin(phase + 0.9))))
    set_joint("right_knee", about(0, 0.1 + 0.7 * torch.relu(torch.sin(phase + 0.9 + math.pi))))
    set_joint("left_ankle", about(0, 0.15 * torch.sin(phase + 1.5)))
    set_joint("right_ankle", about(0, 0.15 * torch.sin(phase + 1.5 + math.pi)))
    # Arms down from the T-pose, swinging against the legs, elbows a little bent.
    for side, sign in (("left", -1.0), ("right", 1.0)):
        down = axis_angle_to_matrix(torch.tensor([0.0, 0.0, sign * 1.2]))
        arm_swing = (0.35 if side == "left" else -0.35) * swing
        set_joint(f"{side}_shoulder", matrix_to_axis_angle(axis_angle_to_matrix(about(0, arm_swing)) @ down))
        set_joint(f"{side}_elbow", about(1, torch.full((num_frames,), sign * 0.35)))
    set_joint("spine2", about(1, -0.12 * swing))
    set_joint("spine3", about(1, -0.08 * swing))
    yaw = torch.linspace(-0.7, 0.7, num_frames)
    transl = torch.zeros(num_frames, 3)
    transl[:, 1] = 0.02 * torch.cos(2 * phase)
    return {"global_orient": about(1, yaw), "body_pose": body.reshape(num_frames, 63), "transl": transl}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "assets/motions/walk.npz"
    num_frames = int(FPS * SECONDS)
    body = walk_cycle(num_frames, FPS)
    camera = Camera.look_at((0.0, 0.0, 2.9), (0.0, -0.05, 0.0), image_size=(640, 480), num_frames=num_frames)
    HumanCondition("anny", body, camera, fps=FPS).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
