"""BVH motion files: parse, forward kinematics, retarget onto studio's joints, and write.

Rotation channels compose in the order they are listed (``Zrotation Yrotation Xrotation`` means
R = Rz @ Ry @ Rx), each joint's rotation turning the bone that starts at it; the rest pose is the
skeleton of the OFFSETs with all rotations zero. studio writes its own motions with SMPL-X's joint
names, metres, Y up and the body facing +Z, so that Blender and other tools read them directly.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import roma
import torch

from studio import validate
from studio.errors import StudioError

logger = logging.getLogger(__name__)

_AXES = {"X": 0, "Y": 1, "Z": 2}
MAX_BVH_BYTES = 256 << 20  # 36,000 frames of a 100-joint skeleton take about 110 MB


@dataclasses.dataclass
class BVH:
    """A parsed BVH file."""

    names: list[str]  # [J]
    parents: list[int]  # [J], -1 for the root
    offsets: np.ndarray  # [J, 3] rest offset from the parent, file units
    channels: list[list[str]]  # per joint, e.g. ["Xposition", ..., "Zrotation", ...]
    end_sites: dict[int, np.ndarray]  # joint -> End Site offset
    motion: np.ndarray  # [F, C] channel values (degrees for rotations)
    frame_time: float  # seconds

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def rest_positions(self) -> np.ndarray:
        """Joint positions of the rest pose (all channels zero): [J, 3]."""
        pos = np.zeros((len(self.names), 3))
        for j, p in enumerate(self.parents):
            pos[j] = self.offsets[j] + (pos[p] if p >= 0 else 0.0)
        return pos

    def global_transforms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward kinematics over all frames: global rotations [F, J, 3, 3] and positions [F, J, 3]."""
        F, J = self.motion.shape[0], len(self.names)
        motion = torch.from_numpy(self.motion).double()
        rot = torch.eye(3, dtype=torch.float64).repeat(F, J, 1, 1)
        pos = torch.zeros(F, J, 3, dtype=torch.float64)
        offsets = torch.from_numpy(self.offsets).double()
        col = 0
        local_rot, local_pos = [], []
        for j in range(J):
            R = torch.eye(3, dtype=torch.float64).expand(F, 3, 3)
            t = offsets[j].expand(F, 3).clone()
            for ch in self.channels[j]:
                value = motion[:, col]
                col += 1
                axis = _AXES[ch[0].upper()]
                if ch.lower().endswith("position"):
                    t[:, axis] = value
                else:
                    rv = torch.zeros(F, 3, dtype=torch.float64)
                    rv[:, axis] = torch.deg2rad(value)
                    R = R @ roma.rotvec_to_rotmat(rv)
            local_rot.append(R)
            local_pos.append(t)
        for j, p in enumerate(self.parents):
            if p < 0:
                rot[:, j], pos[:, j] = local_rot[j], local_pos[j]
            else:
                rot[:, j] = rot[:, p] @ local_rot[j]
                pos[:, j] = pos[:, p] + (rot[:, p] @ local_pos[j][..., None])[..., 0]
        return rot, pos


def read_bvh(path: str | Path) -> BVH:
    """Parse a BVH file; one clear StudioError for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    if path.stat().st_size > MAX_BVH_BYTES:
        raise StudioError(f"{path}: {path.stat().st_size / 2**20:.0f} MB; studio reads BVH files of up to {MAX_BVH_BYTES >> 20} MB")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")  # -sig: a byte-order mark is allowed
    except OSError as exc:
        raise StudioError(f"{path}: cannot read ({exc})") from exc
    if not text.strip():
        raise StudioError(f"{path}: the file is empty")
    try:
        return _parse(text)
    except StudioError as exc:
        raise StudioError(f"{path}: {exc}") from None
    except (ValueError, IndexError, KeyError) as exc:
        raise StudioError(f"{path}: not a valid BVH file ({exc})") from exc


def _parse(text: str) -> BVH:
    tokens = text.split()
    if not tokens or tokens[0].upper() != "HIERARCHY":
        raise ValueError("it does not start with HIERARCHY")
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[list[str]] = []
    end_sites: dict[int, np.ndarray] = {}
    stack: list[int] = []
    i = 1
    in_end_site = False
    while i < len(tokens):
        tok = tokens[i]
        key = tok.upper()
        if key in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            offsets.append([0.0, 0.0, 0.0])
            channels.append([])
            i += 2
        elif key == "END":
            in_end_site = True
            i += 2  # "End Site"
        elif key == "{":
            if not in_end_site:
                stack.append(len(names) - 1)
            i += 1
        elif key == "}":
            if in_end_site:
                in_end_site = False
            else:
                stack.pop()
            i += 1
        elif key == "OFFSET":
            value = [float(x) for x in tokens[i + 1 : i + 4]]
            if in_end_site:
                end_sites[stack[-1]] = np.array(value)
            else:
                offsets[-1] = value
            i += 4
        elif key == "CHANNELS":
            n = int(tokens[i + 1])
            chans = tokens[i + 2 : i + 2 + n]
            for ch in chans:
                if ch[0].upper() not in _AXES or not ch.lower().endswith(("rotation", "position")):
                    raise ValueError(f"unknown channel '{ch}'")
            channels[-1] = chans
            i += 2 + n
        elif key == "MOTION":
            i += 1
            break
        else:
            raise ValueError(f"unexpected '{tok}' in the hierarchy")
    if not names:
        raise ValueError("no joints")
    if len(names) > 1000:
        raise ValueError(f"{len(names)} joints; studio reads skeletons of up to 1000")
    if i >= len(tokens):
        raise ValueError("the file ends inside the hierarchy, before MOTION (truncated?)")
    if stack:
        raise ValueError("unbalanced braces in the hierarchy")
    if tokens[i].rstrip(":").upper() != "FRAMES":
        raise ValueError("no 'Frames:' line after MOTION")
    num_frames = int(tokens[i + 1])
    if tokens[i + 2].upper() != "FRAME" or tokens[i + 3].upper() != "TIME:":
        raise ValueError("no 'Frame Time:' line")
    frame_time = validate.number(tokens[i + 4], name="its Frame Time", low=1.0 / validate.MAX_FPS, high=1.0 / validate.MIN_FPS)
    validate.frame_count(num_frames, what="it")
    num_channels = sum(len(c) for c in channels)
    # One frame per line, each with exactly the channels the hierarchy announces: a count that does
    # not match would shift every joint's values silently.
    time_line = re.search(r"^[ \t]*frame[ \t]+time[ \t]*:[^\n]*$", text, re.IGNORECASE | re.MULTILINE)
    lines = [line.split() for line in text[time_line.end() :].splitlines() if line.strip()]
    if len(lines) < num_frames:
        raise ValueError(f"{num_frames} frames announced, {len(lines)} frame lines found (truncated?)")
    if len(lines) > num_frames:
        logger.warning("BVH announces %d frames but holds %d frame lines; reading the first %d", num_frames, len(lines), num_frames)
    for k, line in enumerate(lines[:num_frames]):
        if len(line) != num_channels:
            raise ValueError(f"frame {k + 1} has {len(line)} values, but the hierarchy's CHANNELS announce {num_channels}")
    motion = validate.finite(np.array(lines[:num_frames], dtype=np.float64), name="its motion data", limit=1e6)
    validate.finite(np.array(offsets, dtype=np.float64), name="its OFFSETs", limit=1e6)
    return BVH(names, parents, np.array(offsets, dtype=np.float64), channels, end_sites, motion, frame_time)


def write_bvh(
    path: str | Path,
    *,
    names: list[str],
    parents: list[int],
    offsets: np.ndarray,
    rotations: np.ndarray,
    root_positions: np.ndarray,
    fps: float,
) -> Path:
    """Write a BVH (atomically) with ``Zrotation Xrotation Yrotation`` channels.

    Args:
        offsets: [J, 3] rest offsets from the parent (the root's is its rest position).
        rotations: [F, J, 3, 3] local rotation of each joint relative to its parent.
        root_positions: [F, 3] the root joint's position per frame.
    """
    from studio.media import atomic_path

    F, J = rotations.shape[:2]
    children: dict[int, list[int]] = {j: [] for j in range(J)}
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "\t" * depth
        kind = "ROOT" if parents[j] < 0 else "JOINT"
        lines.append(f"{pad}{kind} {names[j]}")
        lines.append(f"{pad}{{")
        off = offsets[j] if parents[j] >= 0 else np.zeros(3)
        lines.append(f"{pad}\tOFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        if parents[j] < 0:
            lines.append(f"{pad}\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{pad}\tCHANNELS 3 Zrotation Xrotation Yrotation")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            lines.extend([f"{pad}\tEnd Site", f"{pad}\t{{", f"{pad}\t\tOFFSET 0.000000 0.000000 0.000000", f"{pad}\t}}"])
        lines.append(f"{pad}}}")

    order: list[int] = []

    def walk(j: int) -> None:
        order.append(j)
        for c in children[j]:
            walk(c)

    roots = [j for j in range(J) if parents[j] < 0]
    if len(roots) != 1:
        raise StudioError(f"a BVH skeleton needs exactly one root, got {len(roots)}")
    emit(roots[0], 0)
    walk(roots[0])
    # Intrinsic Z, X, Y: R = Rz @ Rx @ Ry.
    euler = roma.rotmat_to_euler("ZXY", torch.from_numpy(rotations).double(), degrees=True).numpy()  # [F, J, 3]
    lines += ["MOTION", f"Frames: {F}", f"Frame Time: {1.0 / fps:.8f}"]
    for f in range(F):
        row = [f"{v:.6f}" for v in root_positions[f]]
        for j in order:
            row += [f"{v:.6f}" for v in euler[f, j]]
        lines.append(" ".join(row))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
