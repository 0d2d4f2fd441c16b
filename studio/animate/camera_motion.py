"""How a video's camera turns, from its background: for self-reenactment, where the photo is a frame of
the driving video and the result should follow the video's own (handheld, panning) camera.

Every frame is matched with the reference frame by ORB features outside the tracked person's box; a
similarity fitted with RANSAC gives the turn (its shift a pan or tilt, its rotation a roll). Translation of the camera is not recovered: the background is
treated as far away, which a pan or a tilt of a handheld camera satisfies well.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

WORK_SIDE = 480  # longer side at which frames are matched
MIN_MATCHES = 24  # fewer inlier matches than this: the camera is taken as still for that step


def _rotation_from_similarity(A: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The camera turn [3, 3] that moves the picture as the similarity ``A`` [2, 3] does about the
    principal point: a shift is a pan or a tilt (small angles), an in-plane rotation a roll; the scale
    (a zoom or a step forwards) is left out."""
    f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    shift = A[:, :2] @ np.array([cx, cy]) + A[:, 2] - np.array([cx, cy])
    roll = np.arctan2(A[1, 0], A[0, 0])
    rotvec = np.array([-np.arctan2(shift[1], f), np.arctan2(shift[0], f), roll])
    return cv2.Rodrigues(rotvec)[0]


def camera_turns(
    frames: list[np.ndarray], K: np.ndarray, *, reference_frame: int = 0, person_boxes: np.ndarray | None = None
) -> np.ndarray:
    """Rotations [T, 3, 3] taking camera coordinates of frame ``reference_frame`` to those of each frame
    (identity there), from the background of ``frames`` ([H, W, 3] uint8 each).

    Each frame is matched with the reference frame directly (ORB, RANSAC similarity), so errors do
    not add up; a frame with too few matches keeps the previous frame's turn.

    Args:
        K: [3, 3] intrinsics in pixels of the frames.
        person_boxes: [T, 4] (x0, y0, x1, y1) pixel boxes to leave out of the matching, or None.
    """
    T = len(frames)
    h, w = frames[0].shape[:2]
    s = min(1.0, WORK_SIDE / max(h, w))
    Ks = np.diag([s, s, 1.0]) @ K
    orb = cv2.ORB_create(2000)
    features = []
    for t, frame in enumerate(frames):
        grey = cv2.cvtColor(cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        mask = np.full(grey.shape, 255, np.uint8)
        if person_boxes is not None:
            x0, y0, x1, y1 = (np.asarray(person_boxes[t], float) * s).round().astype(int)
            mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = 0
        features.append(orb.detectAndCompute(grey, mask))
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    k0, d0 = features[reference_frame]
    turns = np.repeat(np.eye(3)[None], T, 0)
    order = [*range(reference_frame + 1, T), *range(reference_frame - 1, -1, -1)]
    for t in order:
        previous = t - 1 if t > reference_frame else t + 1
        turns[t] = turns[previous]
        k1, d1 = features[t]
        if d0 is None or d1 is None or len(k0) < MIN_MATCHES or len(k1) < MIN_MATCHES:
            continue
        matches = matcher.match(d0, d1)
        if len(matches) < MIN_MATCHES:
            continue
        a = np.float32([k0[m.queryIdx].pt for m in matches])
        b = np.float32([k1[m.trainIdx].pt for m in matches])
        A, inliers = cv2.estimateAffinePartial2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if A is not None and int(inliers.sum()) >= MIN_MATCHES:
            turns[t] = _rotation_from_similarity(A, Ks)
    return turns


def video_camera_turns(video: str | Path, motion, *, reference_frame: int, body_model) -> np.ndarray:
    """``camera_turns`` of a motion video, leaving out the box of the person ``motion`` (the
    HumanCondition captured from it, in the video's pixels) tracks: [T, 3, 3]."""
    import torch

    from studio.camera import project, world_to_camera
    from studio.media import VideoReader

    frames = [f for _, f in zip(range(motion.num_frames), VideoReader(video))]
    with torch.no_grad():
        joints = motion.posed(body_model).joints
        uv = project(world_to_camera(joints, motion.camera.extrinsics), motion.camera.K).numpy()  # [T, J, 2]
    sy, sx = frames[0].shape[0] / motion.camera.image_size[0], frames[0].shape[1] / motion.camera.image_size[1]
    uv = uv * np.array([sx, sy])
    lo, hi = uv.min(1), uv.max(1)
    pad = 0.25 * (hi - lo)[:, 1:2]
    boxes = np.concatenate([lo - pad, hi + pad], 1)
    K = motion.camera.K[0].numpy() * np.array([[sx], [sy], [1.0]])
    turns = camera_turns(frames, K, reference_frame=reference_frame, person_boxes=boxes)
    if len(frames) < motion.num_frames:  # a short read: the last turn holds
        turns = np.concatenate([turns, np.repeat(turns[-1:], motion.num_frames - len(frames), 0)])
    return turns
