"""``Keypoints``: what a pose estimator hands to the body fitter, in studio's joint names.

Every estimator writes its detections into studio's 76-joint layout (``studio.body.joints.JOINT_NAMES``),
with confidence 0 where it has nothing, so the fitter never needs to know which estimator ran.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from studio.body.joints import NUM_JOINTS


@dataclasses.dataclass
class Keypoints:
    """One person's detections over T frames (T=1 for an image)."""

    points: np.ndarray  # [T, J, 2] float32 pixels in an image of ``image_size``, JOINT_NAMES order
    confidence: np.ndarray  # [T, J] float32 in 0..1; 0 = not observed
    world: np.ndarray  # [T, J, 3] float32 metres, camera axes (x right, y down, z forward), origin between the hips
    world_confidence: np.ndarray  # [T, J] float32; 0 where ``world`` has nothing
    present: np.ndarray  # [T] bool: the person was detected in this frame (before gap filling)
    image_size: tuple[int, int]  # (height, width)
    fps: float = 30.0
    mask: np.ndarray | None = None  # [T, H, W] uint8 person mask (255 = person), when asked for
    num_people: int = 1  # people found when the target was chosen
    notes: tuple[str, ...] = ()  # what the user should be told about the detection (a second scale, ...)

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @staticmethod
    def empty(num_frames: int, image_size: tuple[int, int], *, fps: float = 30.0) -> Keypoints:
        """All-missing keypoints for ``num_frames`` frames."""
        T = num_frames
        return Keypoints(
            points=np.zeros((T, NUM_JOINTS, 2), np.float32),
            confidence=np.zeros((T, NUM_JOINTS), np.float32),
            world=np.zeros((T, NUM_JOINTS, 3), np.float32),
            world_confidence=np.zeros((T, NUM_JOINTS), np.float32),
            present=np.zeros(T, bool),
            image_size=image_size,
            fps=fps,
        )

    @staticmethod
    def concat(parts: list[Keypoints]) -> Keypoints:
        """Join per-frame (or per-chunk) keypoints of one video in time."""
        if not parts:
            raise ValueError("no keypoints to join")
        masks = [p.mask for p in parts]
        return Keypoints(
            points=np.concatenate([p.points for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            world=np.concatenate([p.world for p in parts]),
            world_confidence=np.concatenate([p.world_confidence for p in parts]),
            present=np.concatenate([p.present for p in parts]),
            image_size=parts[0].image_size,
            fps=parts[0].fps,
            mask=np.concatenate(masks) if all(m is not None for m in masks) else None,
            num_people=max(p.num_people for p in parts),
            notes=tuple(dict.fromkeys(n for p in parts for n in p.notes)),
        )

    def select(self, frames: list[int]) -> Keypoints:
        """Some frames, in the given order."""
        return self[np.asarray(frames, dtype=np.int64)]

    def __getitem__(self, frames: slice | np.ndarray) -> Keypoints:
        return dataclasses.replace(
            self,
            points=self.points[frames],
            confidence=self.confidence[frames],
            world=self.world[frames],
            world_confidence=self.world_confidence[frames],
            present=self.present[frames],
            mask=None if self.mask is None else self.mask[frames],
        )

    def scaled(self, image_size: tuple[int, int]) -> Keypoints:
        """The same detections in pixels of an image of another size (the mask is left as it is)."""
        h, w = self.image_size
        scale = np.array([image_size[1] / w, image_size[0] / h], np.float32)
        return dataclasses.replace(self, points=self.points * scale, image_size=tuple(image_size))


def fill_gaps(kp: Keypoints, *, max_gap: int) -> tuple[Keypoints, int]:
    """Fill frames where the person was missed.

    Gaps of at most ``max_gap`` frames between two detections are linearly interpolated, at half the
    neighbours' confidence; longer gaps and missing frames at either end copy the nearest detection
    with confidence 0, so the fitter holds the pose there instead of fitting to nothing.

    Returns:
        (filled keypoints, number of frames without a person).
    """
    present = kp.present
    T = len(present)
    missing = int((~present).sum())
    if missing == 0 or missing == T:
        return kp, missing
    out = dataclasses.replace(
        kp,
        points=kp.points.copy(),
        confidence=kp.confidence.copy(),
        world=kp.world.copy(),
        world_confidence=kp.world_confidence.copy(),
    )
    idx = np.flatnonzero(present)
    for t in np.flatnonzero(~present):
        after = idx[idx > t]
        before = idx[idx < t]
        a = int(before[-1]) if len(before) else None
        b = int(after[0]) if len(after) else None
        if a is not None and b is not None and b - a - 1 <= max_gap:
            s = (t - a) / (b - a)
            for name in ("points", "world"):
                arr = getattr(out, name)
                arr[t] = (1 - s) * arr[a] + s * arr[b]
            out.confidence[t] = 0.5 * np.minimum(out.confidence[a], out.confidence[b])
            out.world_confidence[t] = 0.5 * np.minimum(out.world_confidence[a], out.world_confidence[b])
        else:
            src = a if b is None or (a is not None and t - a <= b - t) else b
            out.points[t], out.world[t] = out.points[src], out.world[src]
            out.confidence[t] = 0.0
            out.world_confidence[t] = 0.0
    return out, missing
