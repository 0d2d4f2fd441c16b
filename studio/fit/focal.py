"""The camera's focal length when the user does not give one.

In order: ``--focal``; the photo's EXIF (the 35 mm-equivalent focal length, or the focal length with
the sensor's resolution); else a search over plausible fields of view. The search places the
estimator's metric 3D landmarks (a rigid body in metres) in front of a pinhole camera of each
candidate focal length so that they project onto the 2D keypoints (a perspective-n-point solve per
frame), and keeps the focal length whose projections fit best, with a mild preference for studio's
default (the image's longer side, a ~53 degree field of view) where the evidence is weak: a person
far from the camera looks much the same through any lens, one close to it does not.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from studio.camera import default_focal_length
from studio.pose.keypoints import Keypoints

logger = logging.getLogger(__name__)

# Fields of view (degrees, across the image's longer side) the search considers.
FOV_RANGE = (20.0, 110.0)


@dataclasses.dataclass
class FocalEstimate:
    """A focal length in pixels of the full-size image, and where it came from."""

    focal: float
    source: str  # "given", "exif", "search" or "default"
    detail: str = ""  # a few words for the user

    def describe(self, image_size: tuple[int, int]) -> str:
        fov = 2 * math.degrees(math.atan(max(image_size) / (2 * self.focal)))
        return f"focal length {self.focal:.0f} px ({fov:.0f} degree field of view, {self.source}{': ' + self.detail if self.detail else ''})"


def focal_from_fov(fov_degrees: float, image_size: tuple[int, int]) -> float:
    """Focal length in pixels for a field of view across the image's longer side."""
    return max(image_size) / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))


def exif_focal_length(path: str | Path, image_size: tuple[int, int]) -> float | None:
    """The focal length in pixels that a photo's EXIF gives for an image of ``image_size`` (as
    displayed), or None: from ``FocalLengthIn35mmFilm`` (35 mm film's 43.27 mm diagonal spans the
    image's diagonal), else from ``FocalLength`` and ``FocalPlaneXResolution``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            sub = exif.get_ifd(0x8769) if exif else {}
            stored = im.size
    except Exception:  # no EXIF, or none readable: the search decides
        return None
    h, w = image_size
    f35 = sub.get(0xA405) or exif.get(0xA405)
    try:
        if f35 and float(f35) > 0:
            return float(f35) / 43.2666 * math.hypot(h, w)
        focal_mm = sub.get(0x920A)
        res = sub.get(0xA20E)
        unit = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}.get(int(sub.get(0xA210, 2)))
        if focal_mm and res and unit and float(focal_mm) > 0 and float(res) > 0:
            sensor_px_per_mm = float(res) / unit  # pixels of the full sensor width per millimetre
            width_at_capture = float(sub.get(0xA002) or max(stored))
            return float(focal_mm) * sensor_px_per_mm * max(h, w) / width_at_capture
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return None


def estimate_focal_length(
    keypoints: Keypoints, *, max_frames: int = 8, prior_weight: float = 0.5, steps: int = 19
) -> FocalEstimate:
    """A focal length for the keypoints' image size from their 2D and metric 3D evidence (see the
    module docstring); the default when there is not enough evidence (few joints with both).

    Args:
        max_frames: frames used (the best-detected ones).
        prior_weight: strength of the pull towards the default focal length, per (log focal ratio)^2,
            against the relative growth of the projections' error (0.5: a focal length twice the
            default must fit 24% better than the default to win).
        steps: candidate fields of view across ``FOV_RANGE``.
    """
    size = keypoints.image_size
    default = default_focal_length(size)
    usable = (keypoints.confidence > 0.6) & (keypoints.world_confidence > 0.6)
    frames = [int(t) for t in np.argsort(-usable.sum(1))[:max_frames] if usable[t].sum() >= 8]
    if not frames:
        return FocalEstimate(default, "default", "too few keypoints to estimate it")
    fovs = np.linspace(*FOV_RANGE, steps)
    scores = np.array([_projection_error(keypoints, frames, usable, focal_from_fov(fov, size)) for fov in fovs])
    focals = np.array([focal_from_fov(fov, size) for fov in fovs])
    total = scores / max(scores.min(), 1e-12) - 1.0 + prior_weight * np.log(focals / default) ** 2
    best = int(np.argmin(total))
    focal = float(focals[best])
    if 0 < best < len(fovs) - 1:  # a parabola through the best and its neighbours, in log focal
        x = np.log(focals[best - 1 : best + 2])
        a, b, _ = np.polyfit(x, total[best - 1 : best + 2], 2)
        if a > 0:
            focal = float(np.exp(np.clip(-b / (2 * a), x.min(), x.max())))
    logger.info("focal search: best %.0f px (default %.0f), scores %s", focal, default, np.round(total, 4).tolist())
    return FocalEstimate(focal, "search", f"estimated from the body's perspective in {len(frames)} frame{'s' if len(frames) > 1 else ''}")


def _projection_error(keypoints: Keypoints, frames: list[int], usable: np.ndarray, focal: float) -> float:
    """Median over frames of the mean squared reprojection error (in person-size units) of the metric
    landmarks, rigidly placed by a PnP solve for a camera of focal length ``focal``."""
    h, w = keypoints.image_size
    K = np.array([[focal, 0.0, w / 2.0], [0.0, focal, h / 2.0], [0.0, 0.0, 1.0]])
    errors = []
    for t in frames:
        ok = usable[t]
        obj = keypoints.world[t, ok].astype(np.float64)
        img = keypoints.points[t, ok].astype(np.float64)
        extent = float(max(np.ptp(img[:, 0]), np.ptp(img[:, 1]), 1.0))
        found, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
        if not found:
            continue
        found, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec, tvec, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
        projected, _ = cv2.projectPoints(obj, rvec, tvec, K, None)
        if float(tvec[2, 0]) <= 0:
            continue
        errors.append(float(np.mean(np.sum((projected[:, 0] - img) ** 2, axis=1))) / extent**2)
    return float(np.median(errors)) if errors else 1.0
