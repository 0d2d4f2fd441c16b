"""What the estimator's output says beyond the keypoints themselves, for the fitter.

- ``world_weights``: per-joint confidence of the metric 3D ("world") landmarks, limb by limb. Two
  signs of a landmark the estimator got wrong: its image-plane position disagrees with its own 2D
  keypoint (after the best scale and offset between the two), or a limb segment ending at it is much
  shorter (or longer) than the body's bone, relative to the other segments: the estimator flattened
  a limb that points at or away from the camera, and its depth there is not to be trusted. A limb is
  as trustworthy as its least trustworthy joint above it (an elbow that is off makes the wrist's depth
  doubtful too).
- ``depth_order``: ordinal depth from 2D occlusion cues. Where two limb joints overlap in the image
  and the estimator sees one (high visibility) but not the other, the unseen one is behind; a limb
  joint inside the torso's outline that is seen is in front of the torso, one that is not seen is
  behind it. Each cue becomes a hinge on camera depths that the fitter adds to its objective.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from studio.body.joints import JOINT_INDEX
from studio.pose.keypoints import Keypoints

# Limb chains, root first; a joint's world confidence is capped by the joints above it.
LIMBS: tuple[tuple[str, ...], ...] = tuple(
    tuple(f"{side}_{j}" for j in chain)
    for side in ("left", "right")
    for chain in (("shoulder", "elbow", "wrist", "index1", "pinky1", "thumb2"), ("hip", "knee", "ankle", "heel", "big_toe"))
)
# Joints whose occlusion cues are used (they move in depth relative to the body).
ORDINAL_JOINTS: tuple[str, ...] = tuple(f"{s}_{j}" for s in ("left", "right") for j in ("elbow", "wrist", "knee", "ankle"))
_TORSO = ("left_shoulder", "right_shoulder", "right_hip", "left_hip")  # the outline, in order


# Limb segments whose length is checked (parent, child).
SEGMENTS: tuple[tuple[str, str], ...] = tuple(
    (f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle"))
)


def world_weights(kp: Keypoints, *, tolerance: float = 0.12, bone_lengths: np.ndarray | None = None, length_tolerance: float = 0.25) -> np.ndarray:
    """Confidence [T, J] of each metric 3D landmark: its visibility times how well its image-plane
    position agrees with its 2D keypoint and how true to the body its limb segments' lengths are,
    capped along each limb by the joints above it.

    Args:
        tolerance: disagreement (metres, in the image plane) at which a landmark keeps e^-1 of its weight.
        bone_lengths: the body's length of each of ``SEGMENTS`` [S] (any unit); None skips the check.
        length_tolerance: relative length error (after the best common scale) at which the segment's
            end keeps e^-1 of its weight.
    """
    T, J = kp.confidence.shape
    out = kp.world_confidence.copy()
    if bone_lengths is not None:
        a = [JOINT_INDEX[p] for p, _ in SEGMENTS]
        b = [JOINT_INDEX[c] for _, c in SEGMENTS]
        lengths = np.linalg.norm(kp.world[:, b] - kp.world[:, a], axis=-1) / np.asarray(bone_lengths)[None]  # [T, S]
        seen = np.minimum(kp.world_confidence[:, a], kp.world_confidence[:, b]) > 0.5
        for t in range(T):
            if seen[t].sum() >= 3:
                ratio = lengths[t] / np.median(lengths[t, seen[t]])
                out[t, b] *= np.exp(-(((ratio - 1.0) / length_tolerance) ** 2)).astype(np.float32)
    for t in range(T):
        ok = (kp.confidence[t] > 0.5) & (kp.world_confidence[t] > 0)
        if ok.sum() < 4:
            continue
        p, w = kp.points[t, ok].astype(np.float64), kp.world[t, ok, :2].astype(np.float64)
        # p ~ s w + c, least squares (the world axes are the image's, x right and y down).
        wc, pc = w - w.mean(0), p - p.mean(0)
        s = float((wc * pc).sum() / max((wc**2).sum(), 1e-9))
        if s <= 0:
            continue
        c = p.mean(0) - s * w.mean(0)
        error = np.linalg.norm(kp.world[t, :, :2] * s + c - kp.points[t], axis=-1) / s  # metres
        out[t] *= np.exp(-((error / tolerance) ** 2)).astype(np.float32)
    for chain in LIMBS:
        ids = [JOINT_INDEX[n] for n in chain]
        for a, b in zip(ids[:-1], ids[1:]):
            out[:, b] = np.minimum(out[:, b], np.maximum(out[:, a], 0.0) + 0.2 * out[:, b])
    return out


@dataclasses.dataclass
class DepthOrder:
    """Ordinal depth cues: in frame ``frame[k]``, joint ``behind[k]`` is at least ``margin[k]`` metres
    farther from the camera than ``front[k]`` (a joint index, or -1 for the torso's centre)."""

    frame: torch.Tensor  # [N] long
    behind: torch.Tensor  # [N] long, -1 = the torso
    front: torch.Tensor  # [N] long, -1 = the torso
    margin: torch.Tensor  # [N] metres
    weight: torch.Tensor  # [N]

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    def penalty(self, joints: torch.Tensor) -> torch.Tensor:
        """Squared hinge of the violated cues, summed per frame: joints [T, J, 3] camera space -> [T]."""
        T = joints.shape[0]
        if len(self) == 0:
            return joints.new_zeros(T)
        torso = joints[:, [JOINT_INDEX[n] for n in _TORSO], 2].mean(1)  # [T]
        depth = torch.cat([joints[..., 2], torso[:, None]], dim=1)  # [T, J + 1]; column J is the torso
        J = joints.shape[1]
        behind = torch.where(self.behind < 0, J, self.behind)
        front = torch.where(self.front < 0, J, self.front)
        gap = depth[self.frame, behind] - depth[self.frame, front]
        cost = self.weight * torch.relu(self.margin - gap).square()
        return joints.new_zeros(T).index_add(0, self.frame, cost)


def depth_order(
    kp: Keypoints, *, overlap: float = 0.08, seen: float = 0.8, unseen: float = 0.4, margin: float = 0.05, torso_margin: float = 0.08
) -> DepthOrder:
    """Ordinal depth cues from the estimator's visibilities (see the module docstring).

    Args:
        overlap: two joints overlap when closer than this share of the person's height in the image.
        seen, unseen: visibilities above ``seen`` count as seen, below ``unseen`` as hidden.
        margin: how much farther a hidden joint is than the joint that hides it (metres).
        torso_margin: how far in front of (or behind) the torso's centre a joint over the torso is.
    """
    frames, behind, front, margins, weights = [], [], [], [], []
    ids = [JOINT_INDEX[n] for n in ORDINAL_JOINTS]
    torso_ids = [JOINT_INDEX[n] for n in _TORSO]
    for t in range(len(kp)):
        conf, pts = kp.confidence[t], kp.points[t]
        body = conf > 0.3
        if body.sum() < 6 or (conf[torso_ids] < 0.5).any():
            continue
        height = float(np.ptp(pts[body, 1]) + 1e-6)
        height = max(height, float(np.ptp(pts[body, 0])))
        for a in ids:
            for b in ids:
                if a == b or conf[a] == 0 or conf[b] < seen or conf[a] > unseen:
                    continue
                if np.linalg.norm(pts[a] - pts[b]) < overlap * height:
                    frames.append(t), behind.append(a), front.append(b), margins.append(margin), weights.append(conf[b] - conf[a])
        outline = pts[torso_ids].astype(np.float32)
        for j in ids:
            if conf[j] == 0 or not inside_polygon(outline, pts[j], shrink=0.15):
                continue
            if conf[j] >= seen:
                frames.append(t), behind.append(-1), front.append(j), margins.append(torso_margin), weights.append(conf[j])
            elif conf[j] <= unseen:
                frames.append(t), behind.append(j), front.append(-1), margins.append(torso_margin), weights.append(1.0 - conf[j])
    as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    as_float = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    return DepthOrder(as_long(frames), as_long(behind), as_long(front), as_float(margins), as_float(weights))


def inside_polygon(polygon: np.ndarray, point: np.ndarray, *, shrink: float = 0.0) -> bool:
    """Whether a 2D point lies inside a polygon [N, 2] shrunk towards its centre by ``shrink``."""
    import cv2

    centre = polygon.mean(0)
    poly = (centre + (polygon - centre) * (1.0 - shrink)).astype(np.float32)
    return bool(cv2.pointPolygonTest(poly.reshape(-1, 1, 2), (float(point[0]), float(point[1])), False) > 0)
