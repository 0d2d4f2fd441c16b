"""Pose estimation: media -> ``Keypoints`` in studio's joint names.

``PoseEstimator`` is the protocol every estimator follows; ``MediaPipeEstimator`` is the embedded one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

from studio.pose.keypoints import Keypoints, fill_gaps


class PoseEstimator(Protocol):
    """Finds one person's keypoints in images and videos."""

    name: str
    num_people: int  # people found when the target was chosen (after a call)

    def estimate_image(self, image: np.ndarray, *, person: int | None = None, mask: bool = True) -> Keypoints:
        """Keypoints (T=1, with a person mask when ``mask``) of person ``person`` (largest first)."""
        ...

    def estimate_video(self, frames: Iterable[np.ndarray], *, fps: float, person: int | None = None) -> Iterator[Keypoints]:
        """Track one person through frames in tracking mode; one Keypoints (T=1) per frame."""
        ...


def load_estimator(name: str = "mediapipe", *, hands: bool = False, face: bool = False) -> PoseEstimator:
    """An estimator by name ("mediapipe" is the embedded default)."""
    from studio.errors import StudioError

    if name == "mediapipe":
        from studio.pose.mediapipe_estimator import MediaPipeEstimator

        return MediaPipeEstimator(hands=hands, face=face)
    raise StudioError(f"unknown pose estimator '{name}'; available: mediapipe")


__all__ = ["Keypoints", "PoseEstimator", "fill_gaps", "load_estimator"]
