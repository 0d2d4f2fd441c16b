"""Measuring fits against known ground truth: synthetic keypoints from a posed body, and the usual
joint-error metrics (MPJPE, and PA-MPJPE after a similarity Procrustes alignment)."""

from __future__ import annotations

import numpy as np
import torch

from studio.body.base import BodyModel
from studio.body.joints import JOINT_INDEX
from studio.condition import HumanCondition, project, world_to_camera
from studio.pose.keypoints import Keypoints
from studio.pose.mediapipe_estimator import BODY_JOINTS

# The 22 SMPL-X body joints the metrics use (pelvis to wrists).
EVAL_JOINTS = list(range(22))


def synthetic_keypoints(
    condition: HumanCondition,
    body_model: BodyModel,
    *,
    noise_px: float = 0.0,
    world_noise_m: float = 0.0,
    dropout: float = 0.0,
    joints: tuple[str, ...] = BODY_JOINTS,
    seed: int = 0,
) -> Keypoints:
    """What an estimator like MediaPipe would report for a known condition: its joints projected by
    its camera, with Gaussian pixel noise, metric root-relative 3D with noise, and a fraction of
    keypoints dropped (confidence 0). Confidences of kept points are drawn from 0.6..1."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        cam = world_to_camera(condition.posed(body_model).joints, condition.camera.extrinsics)
        uv = project(cam, condition.camera.K).numpy()
    cam = cam.numpy()
    T = cam.shape[0]
    kp = Keypoints.empty(T, condition.camera.image_size, fps=condition.fps)
    ids = np.array([JOINT_INDEX[n] for n in joints])
    hips = cam[:, [JOINT_INDEX["left_hip"], JOINT_INDEX["right_hip"]]].mean(1, keepdims=True)
    kp.points[:, ids] = uv[:, ids] + rng.normal(0.0, noise_px, (T, len(ids), 2))
    kp.world[:, ids] = cam[:, ids] - hips + rng.normal(0.0, world_noise_m, (T, len(ids), 3))
    conf = rng.uniform(0.6, 1.0, (T, len(ids))) * (rng.random((T, len(ids))) >= dropout)
    kp.confidence[:, ids] = conf
    kp.world_confidence[:, ids] = conf
    kp.present[:] = True
    return kp


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint position error after aligning the pelvises, in the input's units: pred and gt [T, J, 3]."""
    p = pred - pred[:, :1]
    g = gt - gt[:, :1]
    return float(np.linalg.norm(p - g, axis=-1).mean())


def procrustes_aligned(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pred [T, J, 3] moved by the best similarity transform (rotation, translation, scale) onto gt,
    frame by frame."""
    out = np.empty_like(pred, dtype=np.float64)
    for t, (p, g) in enumerate(zip(pred, gt)):
        pc, gc = p - p.mean(0), g - g.mean(0)
        U, S, Vt = np.linalg.svd(pc.T @ gc)
        d = np.sign(np.linalg.det(U @ Vt))
        D = np.diag([1.0, 1.0, d])
        R = U @ D @ Vt
        scale = (S * np.diag(D)).sum() / (pc**2).sum()
        out[t] = scale * pc @ R + g.mean(0)
    return out


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after the best similarity transform (rotation, translation, scale) per frame."""
    return float(np.linalg.norm(procrustes_aligned(pred, gt) - gt, axis=-1).mean())
