"""Pose priors that keep fitted limbs anatomically plausible.

Two priors, neither learned from licensed data:
- joint limits (below): boxes on each joint's axis-angle components;
- ``PosePrior``: Gaussian mixtures over limb rotations fitted to CMU motion capture (free for any use)
  by ``scripts/build_pose_prior.py``; the file ships in ``assets/prior/``.

Limits are boxes on each joint's axis-angle components in studio's rest frame (T-pose, X = the
person's left, Y = up, Z = forward). For the rotations a body makes, the components are close to
flexion/abduction/twist angles, so a box is a good, cheap stand-in for anatomical ranges:
- hips: +X swings the leg back (extension), -X forward (flexion);
- knees: +X bends the shin back, and only that way;
- spine and neck: +X bends forward;
- elbows: the left forearm bends forward with -Y, the right with +Y; X is the forearm's twist.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import torch

from studio.body.joints import SMPLX_JOINT_NAMES
from studio.errors import StudioError

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


# -- the learned pose prior: Gaussian mixtures over limb rotations, fitted to motion capture ---------

# Limb groups of SMPL-X joints (left side; the right side is mirrored onto it, so both sides share one
# mixture and the prior is symmetric). "spine" and "head" are their own mirror images.
PRIOR_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "leg": (("left_hip", "left_knee", "left_ankle"), ("right_hip", "right_knee", "right_ankle")),
    "arm": (("left_collar", "left_shoulder", "left_elbow"), ("right_collar", "right_shoulder", "right_elbow")),
    "spine": (("spine1", "spine2", "spine3"), None),
    "head": (("neck", "head"), None),
}
DEFAULT_PRIOR = Path(__file__).resolve().parents[2] / "assets" / "prior" / "pose_prior.npz"
PRIOR_FORMAT = "studio.pose_prior"


def mirror_rotvecs(rotvecs: np.ndarray | torch.Tensor):
    """Axis-angle rotations [..., 3] of one body side as the other side's (reflection through the
    body's sagittal plane, X): (x, y, z) -> (x, -y, -z)."""
    sign = rotvecs.new_tensor([1.0, -1.0, -1.0]) if isinstance(rotvecs, torch.Tensor) else np.array([1.0, -1.0, -1.0])
    return rotvecs * sign


def group_samples(body_pose: np.ndarray, group: str, *, sides: tuple[bool, bool] = (True, True)) -> np.ndarray:
    """A limb group's rotations from SMPL-X body poses [T, 63] as samples [N, 3 * joints] in the
    left-side convention: the left limb as it is and the right limb mirrored (``sides`` picks which);
    for a centre group, the poses and their mirror images."""
    from studio.body.joints import JOINT_INDEX

    left, right = PRIOR_GROUPS[group]
    rot = body_pose.reshape(len(body_pose), 21, 3)
    take = lambda names: rot[:, [JOINT_INDEX[n] - 1 for n in names]]  # noqa: E731
    parts = []
    if right is None:
        parts = [take(left), mirror_rotvecs(take(left))]
    else:
        if sides[0]:
            parts.append(take(left))
        if sides[1]:
            parts.append(mirror_rotvecs(take(right)))
    return np.concatenate(parts).reshape(-1, 3 * len(left)) if parts else np.zeros((0, 3 * len(left)))


def fit_gmm(x: np.ndarray, components: int, *, iterations: int = 200, reg: float = 1e-3, seed: int = 0) -> dict[str, np.ndarray]:
    """A Gaussian mixture with full covariances by expectation-maximisation.

    Args:
        x: samples [N, D].
        components: K.
        reg: added to every covariance's diagonal (a floor on the variance, radians squared).
    Returns:
        ``weights`` [K], ``means`` [K, D], ``covariances`` [K, D, D] (float64).
    """
    rng = np.random.default_rng(seed)
    n, d = x.shape
    if n < components:
        raise ValueError(f"fit_gmm: {n} samples cannot fit {components} components")
    # k-means++ seeding
    means = [x[rng.integers(n)]]
    for _ in range(1, components):
        dist = np.min([((x - m) ** 2).sum(1) for m in means], axis=0)
        means.append(x[rng.choice(n, p=dist / dist.sum())] if dist.sum() > 0 else x[rng.integers(n)])
    means = np.array(means)
    cov = np.repeat((np.cov(x.T) + reg * np.eye(d))[None], components, 0)
    weights = np.full(components, 1.0 / components)
    previous = -np.inf
    for _ in range(iterations):
        log_p = _gaussian_log_density(x, means, cov) + np.log(weights)  # [N, K]
        top = log_p.max(1, keepdims=True)
        log_sum = top[:, 0] + np.log(np.exp(log_p - top).sum(1))
        resp = np.exp(log_p - log_sum[:, None])
        nk = resp.sum(0) + 1e-10
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        for k in range(components):
            c = x - means[k]
            cov[k] = (resp[:, k, None] * c).T @ c / nk[k] + reg * np.eye(d)
        ll = float(log_sum.mean())
        if ll - previous < 1e-7:
            break
        previous = ll
    return {"weights": weights, "means": means, "covariances": cov}


def _gaussian_log_density(x: np.ndarray, means: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x | means[k], cov[k]) for samples [N, D]: [N, K]."""
    d = x.shape[1]
    out = np.empty((x.shape[0], len(means)))
    for k in range(len(means)):
        L = np.linalg.cholesky(cov[k])
        z = np.linalg.solve(L, (x - means[k]).T)
        out[:, k] = -0.5 * (z**2).sum(0) - np.log(np.diag(L)).sum() - 0.5 * d * np.log(2 * np.pi)
    return out


@dataclasses.dataclass
class _Mixture:
    left: torch.Tensor  # [G] body_pose joint rows (0..20) of the left (or centre) limb
    right: torch.Tensor | None  # [G] the right limb's rows, mirrored onto the left
    means: torch.Tensor  # [K, D]
    precision_chol: torch.Tensor  # [K, D, D]: P = L L^T
    offset: torch.Tensor  # [K]: -log w_k - log det L_k, less its minimum over k (so the best mode costs 0)


class PosePrior:
    """Negative log-likelihood of body poses under limb-wise Gaussian mixtures fitted to motion capture
    (``scripts/build_pose_prior.py`` builds the file; ``DEFAULT_PRIOR`` ships with studio).

    The cost of a limb is the smallest over components of ``0.5 |L_k^T (x - mu_k)|^2 - log w_k -
    log det L_k`` (the max-mixture approximation of SMPLify), zero at the likeliest mode."""

    def __init__(self, path: str | Path = DEFAULT_PRIOR) -> None:
        from studio.body.joints import JOINT_INDEX
        from studio.media import read_npz

        path = Path(path)
        if not path.is_file():
            raise StudioError(f"{path}: no such pose-prior file (build one with scripts/build_pose_prior.py)")
        data = read_npz(path, what="pose-prior file")
        if str(data.get("format", "")) != PRIOR_FORMAT:
            raise StudioError(f"{path}: not a studio pose-prior file (no format '{PRIOR_FORMAT}')")
        self.path = path
        self.sources = [str(s) for s in data.get("sources", [])]
        self.mixtures: list[_Mixture] = []
        for group, (left, right) in PRIOR_GROUPS.items():
            means = data[f"{group}/means"]
            cov = data[f"{group}/covariances"]
            weights = data[f"{group}/weights"]
            d = 3 * len(left)
            if means.ndim != 2 or means.shape[1] != d or cov.shape != (len(means), d, d) or weights.shape != (len(means),):
                raise StudioError(f"{path}: '{group}' has the wrong shape (expected means [K, {d}], covariances [K, {d}, {d}], weights [K])")
            if not (np.isfinite(means).all() and np.isfinite(cov).all() and (weights > 0).all()):
                raise StudioError(f"{path}: '{group}' holds NaN, infinite or non-positive values")
            precision = np.linalg.inv(cov)
            try:
                chol = np.linalg.cholesky(precision)
            except np.linalg.LinAlgError:
                raise StudioError(f"{path}: '{group}' covariances are not positive definite") from None
            offset = -np.log(weights) - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
            rows = lambda names: torch.tensor([JOINT_INDEX[n] - 1 for n in names])  # noqa: E731
            self.mixtures.append(
                _Mixture(
                    left=rows(left), right=None if right is None else rows(right),
                    means=torch.from_numpy(means).float(), precision_chol=torch.from_numpy(chol).float(),
                    offset=torch.from_numpy(offset - offset.min()).float(),
                )  # fmt: skip
            )

    def penalty(self, body_pose: torch.Tensor) -> torch.Tensor:
        """Cost of body poses [T, 63] (axis-angle, SMPL-X joints 1..21): [T], summed over limbs."""
        rot = body_pose.reshape(len(body_pose), 21, 3)
        total = body_pose.new_zeros(len(body_pose))
        for m in self.mixtures:
            if m.right is not None:  # a left and a right limb, the right one mirrored onto the left
                other, share = mirror_rotvecs(rot[:, m.right]), 1.0
            else:  # a centre group costs the mean of it and its mirror image: exactly symmetric
                other, share = mirror_rotvecs(rot[:, m.left]), 0.5
            x = torch.cat([rot[:, m.left], other]).reshape(2 * len(body_pose), -1)  # [2T, D]
            z = torch.einsum("tkd,kde->tke", x[:, None] - m.means[None], m.precision_chol)  # [2T, K, D]
            cost = (0.5 * z.square().sum(-1) + m.offset).min(dim=1).values  # [2T]
            total = total + share * (cost[: len(body_pose)] + cost[len(body_pose) :])
        return total


@functools.lru_cache(maxsize=4)
def load_pose_prior(path: str | None = None) -> PosePrior:
    """The pose prior at ``path`` (None: the one shipped with studio), loaded once per process."""
    return PosePrior(DEFAULT_PRIOR if path is None else path)
