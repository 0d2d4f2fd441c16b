"""OpenPose / DWPose-style skeleton drawing: COCO-18 body limbs in OpenPose colours, 21-point hands."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from studio.body.joints import (
    JOINT_INDEX,
    OPENPOSE_BODY,
    OPENPOSE_COLORS,
    OPENPOSE_HAND_EDGES,
    OPENPOSE_LIMBS,
    openpose_hand,
)

_HAND_COLORS = [
    tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / len(OPENPOSE_HAND_EDGES), 1.0, 1.0))
    for i in range(len(OPENPOSE_HAND_EDGES))
]
_HAND_INDEX = {side: np.array([JOINT_INDEX[n] for n in openpose_hand(side)]) for side in ("right", "left")}


def openpose_keypoints(joints2d: np.ndarray) -> np.ndarray:
    """COCO-18 keypoints from studio's named joints.

    Args:
        joints2d: [NUM_JOINTS, 2] pixel positions in JOINT_NAMES order.
    Returns:
        [18, 2] positions in OpenPose order; the OpenPose neck is the shoulders' midpoint.
    """
    out = np.empty((len(OPENPOSE_BODY), 2), dtype=np.float64)
    for i, name in enumerate(OPENPOSE_BODY):
        if name == "@neck":
            out[i] = 0.5 * (joints2d[JOINT_INDEX["left_shoulder"]] + joints2d[JOINT_INDEX["right_shoulder"]])
        else:
            out[i] = joints2d[JOINT_INDEX[name]]
    return out


def draw_skeleton(
    canvas: np.ndarray,
    joints2d: np.ndarray,
    *,
    visible: np.ndarray | None = None,
    hands: bool = True,
) -> np.ndarray:
    """Draw an OpenPose-style skeleton in place.

    Args:
        canvas: [H, W, 3] uint8 RGB image, drawn on in place.
        joints2d: [NUM_JOINTS, 2] pixel positions in JOINT_NAMES order.
        visible: [NUM_JOINTS] bool, joints that exist and lie in front of the camera (default: all).
        hands: draw the 21-point hands too.
    Returns:
        canvas.
    """
    H, W = canvas.shape[:2]
    scale = max(H, W) / 512.0
    stick = max(1, round(4 * scale))
    radius = max(1, round(4 * scale))
    if visible is None:
        visible = np.ones(joints2d.shape[0], dtype=bool)
    body = openpose_keypoints(joints2d)
    body_visible = np.array(
        [
            visible[JOINT_INDEX["left_shoulder"]] and visible[JOINT_INDEX["right_shoulder"]]
            if n == "@neck"
            else visible[JOINT_INDEX[n]]
            for n in OPENPOSE_BODY
        ]
    )
    shift = 4  # sub-pixel precision for cv2
    fix = float(1 << shift)
    for k, (a, b) in enumerate(OPENPOSE_LIMBS):
        if not (body_visible[a] and body_visible[b]):
            continue
        pa, pb = body[a], body[b]
        center = (pa + pb) / 2
        length = float(np.linalg.norm(pa - pb)) / 2
        angle = float(np.degrees(np.arctan2(pa[1] - pb[1], pa[0] - pb[0])))
        poly = cv2.ellipse2Poly(
            (int(center[0]), int(center[1])), (max(int(length), 1), stick), int(angle), 0, 360, 10
        )
        color = tuple(int(c * 0.6) for c in OPENPOSE_COLORS[k])
        cv2.fillConvexPoly(canvas, poly, color, lineType=cv2.LINE_AA)
    for k in range(len(OPENPOSE_BODY)):
        if body_visible[k]:
            p = (int(body[k][0] * fix), int(body[k][1] * fix))
            cv2.circle(canvas, p, radius * (1 << shift), OPENPOSE_COLORS[k], -1, cv2.LINE_AA, shift)
    if hands:
        hand_width = max(1, round(2 * scale))
        for side in ("right", "left"):
            idx = _HAND_INDEX[side]
            if not visible[idx].all():
                continue
            pts = joints2d[idx]
            for e, (a, b) in enumerate(OPENPOSE_HAND_EDGES):
                pa = (int(pts[a][0] * fix), int(pts[a][1] * fix))
                pb = (int(pts[b][0] * fix), int(pts[b][1] * fix))
                cv2.line(canvas, pa, pb, _HAND_COLORS[e], hand_width, cv2.LINE_AA, shift)
            for p in pts:
                cv2.circle(canvas, (int(p[0] * fix), int(p[1] * fix)), hand_width * (1 << shift), (0, 0, 255), -1, cv2.LINE_AA, shift)
    return canvas
