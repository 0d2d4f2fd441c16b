"""Build studio's pose prior (``assets/prior/pose_prior.npz``) from CMU motion capture.

Every BVH is retargeted onto the Anny body (``studio.motion.import_motion``), its SMPL-X body poses are
cut into limb groups (legs, arms, spine, head; the right side mirrored onto the left so both share one
mixture), and a Gaussian mixture with full covariances is fitted to each group by EM
(``studio.fit.prior.fit_gmm``). The output is a small ``.npz`` that ``studio.fit.prior.PosePrior`` reads.

Sources, by default: the bundled ``assets/media/cmu_02_03_run.bvh`` and every ``*.bvh`` in
``../shared/mocap/cmu/`` and ``../shared/media/`` when present. Add your own CMU BVH files (or folders
of them) as arguments, e.g. a full download of the CMU database in B. Hahne's BVH conversion:

    .venv/bin/python scripts/build_pose_prior.py [MORE.bvh | FOLDER ...] [-o assets/prior/pose_prior.npz]

The first frame of a full CMU trial is a T-pose calibration frame and is skipped (files whose first
frame is not one keep it). A limb whose BVH channels are all exactly zero over a file carries no data
(CMU subject 79's right leg) and is left out. CMU asks for this acknowledgement: "The data used in this
project was obtained from mocap.cs.cmu.edu. The database was created with funding from NSF
EIA-0196217."
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.fit.prior import DEFAULT_PRIOR, PRIOR_FORMAT, PRIOR_GROUPS, fit_gmm, group_samples  # noqa: E402

# CMU BVH joint names of each limb group's joints (left, right), to spot limbs without data.
_CMU_LIMBS = {
    "leg": (("LeftUpLeg", "LeftLeg", "LeftFoot"), ("RightUpLeg", "RightLeg", "RightFoot")),
    "arm": (("LeftShoulder", "LeftArm", "LeftForeArm"), ("RightShoulder", "RightArm", "RightForeArm")),
}


def default_sources() -> list[Path]:
    shared = ROOT.parent / "shared"
    found = [ROOT / "assets" / "media" / "cmu_02_03_run.bvh"]
    for folder in (shared / "mocap" / "cmu", shared / "media"):
        found += sorted(folder.glob("*.bvh")) if folder.is_dir() else []
    unique: dict[str, Path] = {}
    for path in found:  # the same trial in two places counts once
        unique.setdefault(path.name.removeprefix("cmu_"), path)
    return list(unique.values())


def _is_tpose(bvh) -> bool:
    """Whether a BVH's first frame is CMU's calibration T-pose: every rotation channel near zero."""
    rot = [i for i, ch in enumerate(c for chans in bvh.channels for c in chans) if ch.lower().endswith("rotation")]
    return bool(np.abs(bvh.motion[0, rot]).max() < 1e-3) and len(bvh.motion) > 1


def _empty_limbs(bvh) -> dict[str, tuple[bool, bool]]:
    """Per limb group, whether (left, right) carry data: False where every channel is exactly zero."""
    columns, col = {}, 0
    for name, chans in zip(bvh.names, bvh.channels):
        columns[name.split(":")[-1]] = list(range(col, col + len(chans)))
        col += len(chans)
    out = {}
    for group, sides in _CMU_LIMBS.items():
        flags = []
        for joints in sides:
            cols = [c for j in joints for c in columns.get(j, [])]
            flags.append(not cols or bool(np.any(bvh.motion[:, cols] != 0.0)))
        out[group] = tuple(flags)
    return out


def collect(paths: list[Path], *, fps: float) -> tuple[dict[str, np.ndarray], list[str]]:
    """Limb-group samples from every file: group -> [N, D], and a line per file used."""
    from studio.body import load_body_model
    from studio.motion import import_motion
    from studio.motion.bvh import read_bvh

    model = load_body_model("anny")
    samples: dict[str, list[np.ndarray]] = {g: [] for g in PRIOR_GROUPS}
    used = []
    for path in paths:
        bvh = read_bvh(path)
        skip_first = _is_tpose(bvh)
        cond = import_motion(path, model, fps=min(fps, bvh.fps) if len(bvh.motion) > 3 else None)
        pose = cond.body["body_pose"].numpy().astype(np.float64)
        if skip_first:
            pose = pose[1:]
        sides = _empty_limbs(bvh)
        for group in PRIOR_GROUPS:
            samples[group].append(group_samples(pose, group, sides=sides.get(group, (True, True))))
        dropped = [f"{g} {'left' if not s[0] else 'right'}" for g, s in sides.items() if not all(s)]
        used.append(f"{path.name}: {len(pose)} poses" + (f" (no data: {', '.join(dropped)})" if dropped else ""))
    return {g: np.concatenate(v) for g, v in samples.items()}, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", type=Path, help="more CMU BVH files or folders of them (added to the defaults)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_PRIOR)
    parser.add_argument("--components", type=int, default=6, help="Gaussians per limb group")
    parser.add_argument("--fps", type=float, default=60.0, help="resample long clips to this rate (consecutive 120 fps frames add little)")
    parser.add_argument("--reg", type=float, default=0.01, help="variance floor (radians squared), so poses the data lacks stay possible")
    parser.add_argument("--only", action="store_true", help="use only the given sources, not the defaults")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    extra = []
    for src in args.sources:
        extra += sorted(src.rglob("*.bvh")) if src.is_dir() else [src]
    paths = extra if args.only else default_sources() + extra
    if not paths:
        raise SystemExit("no BVH files found")
    samples, used = collect(paths, fps=args.fps)
    arrays: dict[str, np.ndarray] = {"format": np.array(PRIOR_FORMAT), "sources": np.array(used)}
    for group, x in samples.items():
        k = min(args.components, max(1, len(x) // 20))
        gmm = fit_gmm(x, k, reg=args.reg, seed=0)
        for key, value in gmm.items():
            arrays[f"{group}/{key}"] = value.astype(np.float32)
        print(f"{group}: {len(x)} samples, {k} components")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.partial.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(args.output)
    for line in used:
        print(f"  {line}")
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.0f} KB) from {len(paths)} files")


if __name__ == "__main__":
    main()
