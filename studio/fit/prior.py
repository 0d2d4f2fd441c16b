"""Pose priors that keep fitted limbs anatomically plausible, with no learned (licensed) prior.

Limits are boxes on each joint's axis-angle components in studio's rest frame (T-pose, X = the
person's left, Y = up, Z = forward). For the rotations a body makes, the components are close to
flexion/abduction/twist angles, so a box is a good, cheap stand-in for anatomical ranges:
- hips: +X swings the leg back (extension), -X forward (flexion);
- knees: +X bends the shin back, and only that way;
- spine and neck: +X bends forward;
- elbows: the left forearm bends forward with -Y, the right with +Y; X is the forearm's twist.
"""

from __future__ import annotations

import functools

import torch

from studio.body.joints import SMPLX_JOINT_NAMES

_INF = 3.2  # wider than any rotation angle: no limit

# (lo, hi) per axis, radians, for the left side; right-side limits are mirrored (Y and Z flip sign).
_BODY_LIMITS_LEFT: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "hip": ((-2.4, 0.6), (-0.9, 0.9), (-0.5, 1.3)),
    "knee": ((-0.05, 2.7), (-0.15, 0.15), (-0.12, 0.12)),
    "ankle": ((-0.7, 1.0), (-0.5, 0.5), (-0.45, 0.45)),
    "foot": ((-0.8, 0.5), (-0.1, 0.1), (-0.1, 0.1)),
    "collar": ((-0.2, 0.2), (-0.4, 0.4), (-0.3, 0.5)),
    "shoulder": ((-1.7, 1.7), (-2.3, 1.1), (-1.8, 1.7)),
    "elbow": ((-1.7, 1.7), (-2.7, 0.05), (-0.15, 0.15)),
    "wrist": ((-1.4, 1.4), (-1.0, 1.0), (-1.4, 1.4)),
}
_CENTRE_LIMITS = {
    "spine1": ((-0.4, 0.8), (-0.5, 0.5), (-0.4, 0.4)),
    "spine2": ((-0.3, 0.5), (-0.4, 0.4), (-0.3, 0.3)),
    "spine3": ((-0.3, 0.5), (-0.4, 0.4), (-0.3, 0.3)),
    "neck": ((-0.6, 0.8), (-0.9, 0.9), (-0.5, 0.5)),
    "head": ((-0.5, 0.6), (-0.7, 0.7), (-0.4, 0.4)),
}
# Fingers curl towards the palm: the left hand's fingers with -Z, the right's with +Z.
_FINGER_LEFT = ((-0.3, 0.3), (-0.35, 0.35), (-1.9, 0.25))
_THUMB_LEFT = ((-1.2, 1.2), (-1.2, 1.2), (-1.2, 1.2))


def _mirror(limits):
    (xl, xh), (yl, yh), (zl, zh) = limits
    return ((xl, xh), (-yh, -yl), (-zh, -zl))


@functools.lru_cache(maxsize=1)
def joint_limits() -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds [55, 3] on each SMPL-X joint's axis-angle components (radians)."""
    lo = torch.full((55, 3), -_INF)
    hi = torch.full((55, 3), _INF)
    for j, name in enumerate(SMPLX_JOINT_NAMES):
        limits = None
        if name in _CENTRE_LIMITS:
            limits = _CENTRE_LIMITS[name]
        else:
            side, _, part = name.partition("_")
            if side in ("left", "right"):
                if part in _BODY_LIMITS_LEFT:
                    limits = _BODY_LIMITS_LEFT[part]
                elif part[:-1] in ("index", "middle", "ring", "pinky"):
                    limits = _FINGER_LEFT
                elif part[:-1] == "thumb":
                    limits = _THUMB_LEFT
                if limits is not None and side == "right":
                    limits = _mirror(limits)
        if limits is not None:
            lo[j] = torch.tensor([a for a, _ in limits])
            hi[j] = torch.tensor([b for _, b in limits])
    return lo, hi


def limit_penalty(rotvecs: torch.Tensor, joints: slice) -> torch.Tensor:
    """Squared distance of axis-angle rotations [T, N, 3] outside the limits of SMPL-X joints
    ``joints`` (N of them), summed per frame: [T]."""
    lo, hi = joint_limits()
    lo, hi = lo[joints].to(rotvecs), hi[joints].to(rotvecs)
    over = torch.relu(rotvecs - hi) + torch.relu(lo - rotvecs)
    return over.square().sum(dim=(1, 2))
