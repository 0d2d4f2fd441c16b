"""The pose corpus the text retrieves from, and the retrieval.

The corpus holds two kinds of entries, each with a text description, a pose kind (what the pose is
good for: "sit", "climb", ...) and SMPL-X-style pose fields:

- real poses: the 13 CMU interaction trials bundled in ``assets/mocap/cmu`` (17 frames), retargeted
  onto the body model by ``studio.motion``, each with CMU's own description of its trial;
- authored poses: a few key poses written here as bone directions (the direction each limb points
  in the body's frame), for interactions the CMU set lacks (lying, riding, kicking, pushing, ...).

Retrieval (``retrieve``) ranks the entries of the kinds an interaction accepts by the cosine
similarity of their text to the prompt (the sentence encoder's), InterFusion's top-k text-to-pose
step with studio's corpus in place of its 2,048-pose codebook.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path

import numpy as np
import torch

from studio.body.base import matrix_to_axis_angle, rotation_between
from studio.body.joints import JOINT_INDEX, SMPLX_PARENTS

logger = logging.getLogger(__name__)

CMU_DIR = Path(__file__).resolve().parents[2] / "assets" / "mocap" / "cmu"

Direction = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class PoseEntry:
    """One pose of the corpus."""

    key: str  # "cmu:13_02#0" or "authored:sit"
    text: str  # what the pose shows (CMU's trial description, or ours)
    kind: str  # what the pose is good for
    global_orient: torch.Tensor  # [3] axis-angle
    body_pose: torch.Tensor  # [63] axis-angle, SMPL-X joints 1..21
    grip: bool = False  # the hands close around something


@dataclasses.dataclass(frozen=True)
class Template:
    """An authored pose: bone directions (body frame: X left, Y up, Z forward) for some joints,
    plain rotations (degrees, axis-angle, relative to the parent) for others; ``mirror`` gives the
    right side the left side's directions with X negated (and the reverse)."""

    text: str
    kind: str
    directions: dict[str, Direction] = dataclasses.field(default_factory=dict)
    rotations: dict[str, Direction] = dataclasses.field(default_factory=dict)
    global_orient: Direction = (0.0, 0.0, 0.0)  # degrees
    mirror: bool = True
    grip: bool = False


_RELAXED_ARMS = {
    "left_shoulder": (0.2, -1.0, 0.02),
    "left_elbow": (0.12, -1.0, 0.12),
    "right_shoulder": (-0.2, -1.0, 0.02),
    "right_elbow": (-0.12, -1.0, 0.12),
}

TEMPLATES: dict[str, Template] = {
    "stand": Template("a person stands upright with the arms relaxed at the sides", "stand", dict(_RELAXED_ARMS)),
    "sit": Template(
        "a person sits on a chair with the hands resting on the thighs",
        "sit",
        {
            "left_hip": (0.1, 0.0, 1.0),
            "left_knee": (0.03, -1.0, 0.05),
            "left_shoulder": (0.2, -0.9, 0.25),
            "left_elbow": (0.05, -0.65, 0.75),
        },
    ),
    "lie": Template(
        "a person lies flat on the back with the arms by the sides",
        "lie",
        {"left_shoulder": (0.25, -1.0, 0.0), "left_elbow": (0.2, -1.0, 0.0), "left_hip": (0.03, -1.0, 0.0)},
        global_orient=(-90.0, 0.0, 0.0),
    ),
    "lean_back": Template(
        "a person leans back against a wall, arms hanging down", "lean_back", dict(_RELAXED_ARMS), global_orient=(-6.0, 0.0, 0.0)
    ),
    "lean_forward": Template(
        "a person leans forward and rests both hands on a table",
        "lean_forward",
        {"left_shoulder": (0.25, -0.7, 0.65), "left_elbow": (0.2, -0.85, 0.5)},
        {"spine1": (25.0, 0.0, 0.0)},
    ),
    "step": Template(
        "a person steps up with the left foot raised onto a step",
        "step",
        {"left_hip": (0.08, -0.45, 0.9), "left_knee": (0.0, -1.0, -0.05), **_RELAXED_ARMS},
        mirror=False,
    ),
    "hold_two": Template(
        "a person holds something in front with both hands",
        "hold_two",
        {"left_shoulder": (0.22, -0.85, 0.45), "left_elbow": (0.0, -0.1, 1.0)},
        grip=True,
    ),
    "hold_one": Template(
        "a person holds something in the right hand in front of the body",
        "hold_one",
        {**_RELAXED_ARMS, "right_shoulder": (-0.15, -0.85, 0.45), "right_elbow": (0.0, 0.1, 1.0)},
        mirror=False,
        grip=True,
    ),
    "carry_two": Template(
        "a person carries something in front with both arms",
        "carry_two",
        {"left_shoulder": (0.22, -0.95, 0.3), "left_elbow": (0.02, -0.25, 1.0)},
        grip=True,
    ),
    "carry_one": Template(
        "a person carries something hanging from the right hand",
        "carry_one",
        {**_RELAXED_ARMS, "right_shoulder": (-0.12, -1.0, 0.0), "right_elbow": (-0.08, -1.0, 0.02)},
        mirror=False,
        grip=True,
    ),
    "lift_two": Template(
        "a person squats and lifts something from the floor with both hands",
        "lift_two",
        {
            "left_hip": (0.2, -0.5, 0.85),
            "left_knee": (0.05, -0.9, -0.4),
            "left_shoulder": (0.3, -0.9, 0.3),
            "left_elbow": (0.15, -0.9, 0.3),
        },
        {"spine1": (30.0, 0.0, 0.0), "spine2": (10.0, 0.0, 0.0)},
        grip=True,
    ),
    "push": Template(
        "a person leans forward and pushes with both arms stretched out",
        "push",
        {
            "left_shoulder": (0.22, -0.35, 0.9),
            "left_elbow": (0.05, -0.15, 1.0),
            "left_hip": (0.03, -1.0, 0.25),
            "right_hip": (-0.03, -1.0, -0.3),
        },
        global_orient=(12.0, 0.0, 0.0),
        grip=True,
    ),
    "pull": Template(
        "a person walks and pulls something behind with the right hand",
        "pull",
        {
            "right_shoulder": (-0.1, -0.87, -0.5),
            "right_elbow": (-0.05, -0.87, -0.5),
            "left_shoulder": (0.2, -0.95, 0.2),
            "left_elbow": (0.12, -0.9, 0.35),
            "left_hip": (0.03, -1.0, 0.2),
            "right_hip": (-0.03, -1.0, -0.15),
        },
        global_orient=(5.0, 0.0, 0.0),
        mirror=False,
        grip=True,
    ),  # fmt: skip
    "ride_bike": Template(
        "a person rides a bicycle, leaning forward with the hands on the handlebar",
        "ride_bike",
        {
            "left_hip": (0.1, -0.5, 0.85),
            "left_knee": (0.0, -0.8, -0.6),
            "left_shoulder": (0.25, -0.75, 0.6),
            "left_elbow": (0.05, -0.7, 0.7),
        },
        {"spine1": (20.0, 0.0, 0.0)},
        grip=True,
    ),
    "ride_board": Template(
        "a person stands on a skateboard with the feet apart and the arms out for balance",
        "ride_board",
        {
            "left_hip": (0.22, -1.0, 0.0),
            "left_knee": (0.2, -1.0, 0.08),
            "left_shoulder": (0.9, -0.45, 0.1),
            "left_elbow": (0.9, -0.5, 0.2),
        },
    ),
    "kick": Template(
        "a person kicks with the right leg swung forward",
        "kick",
        {
            "right_hip": (-0.05, -0.55, 0.85),
            "right_knee": (-0.02, -0.6, 0.8),
            "left_shoulder": (0.75, -0.45, 0.45),
            "left_elbow": (0.6, -0.5, 0.6),
            "right_shoulder": (-0.55, -0.7, -0.45),
            "right_elbow": (-0.4, -0.8, -0.3),
        },
        global_orient=(-5.0, 0.0, 0.0),
        mirror=False,
    ),  # fmt: skip
    "throw": Template(
        "a person throws overhand with the right arm raised behind the head",
        "throw",
        {
            "right_shoulder": (-0.55, 0.55, -0.6),
            "right_elbow": (-0.15, 0.95, 0.25),
            "left_shoulder": (0.45, 0.0, 0.9),
            "left_elbow": (0.3, -0.1, 0.95),
            "left_hip": (0.05, -1.0, 0.25),
            "right_hip": (-0.05, -1.0, -0.2),
        },
        mirror=False,
        grip=True,
    ),  # fmt: skip
    "hug": Template(
        "a person hugs something against the chest with both arms",
        "hug",
        {"left_shoulder": (0.4, -0.35, 0.85), "left_elbow": (-0.75, -0.05, 0.65)},
        grip=True,
    ),
    "reach": Template(
        "a person reaches up high with the right arm",
        "reach",
        {**_RELAXED_ARMS, "right_shoulder": (-0.12, 0.97, 0.2), "right_elbow": (-0.1, 0.97, 0.25)},
        mirror=False,
        grip=True,
    ),
}

# What each CMU frame shows (seen on the retargeted body), by trial and frame: pose kind, and whether
# the hands hold something. Subject 79's right-leg channels are zero in the source (see the README), so
# its frames take their right leg from the left, mirrored.
CMU_KINDS: dict[str, tuple[tuple[str, bool], ...]] = {
    "13_01": (("rise", False), ("rise", False)),  # leaning forward, getting up from the stool
    "13_02": (("sit", False),),
    "13_07": (("stand", True), ("drink", True), ("drink", True)),
    "13_12": (("reach", True),),
    "13_22": (("wash", False),),
    "13_24": (("sweep", True),),
    "13_30": (("exercise", False),),
    "13_33": (("climb", True), ("climb", True)),
    "13_38": (("step", False),),
    "143_10": (("lift_one", True),),
    "143_27": (("wash", False),),
    "79_04": (("dig", True),),
    "79_26": (("dig", True),),
}
_MIRROR_RIGHT_LEG = ("79_",)


def _bone_child(joint: str) -> str | None:
    children = {
        "hip": "knee", "knee": "ankle", "ankle": "foot", "collar": "shoulder", "shoulder": "elbow", "elbow": "wrist", "wrist": "middle1",
    }  # fmt: skip
    side, _, part = joint.partition("_")
    if side in ("left", "right") and part in children:
        return f"{side}_{children[part]}"
    return {"spine1": "spine2", "spine2": "spine3", "spine3": "neck", "neck": "head"}.get(joint)


def _mirrored(template: Template) -> tuple[dict[str, Direction], dict[str, Direction]]:
    directions, rotations = dict(template.directions), dict(template.rotations)
    if template.mirror:
        for name, d in template.directions.items():
            if name.startswith("left_"):
                directions.setdefault("right_" + name[5:], (-d[0], d[1], d[2]))
        for name, r in template.rotations.items():
            if name.startswith("left_"):
                rotations.setdefault("right_" + name[5:], (r[0], -r[1], -r[2]))
    return directions, rotations


# Hinged joints: the parent bone's joint, the hinge, and the hinge's axis in the T-pose (a positive
# turn about it bends the limb the way it bends: elbows forward, knees backward).
_HINGES = {
    "left_shoulder": ("left_elbow", (0.0, -1.0, 0.0)), "right_shoulder": ("right_elbow", (0.0, 1.0, 0.0)),
    "left_hip": ("left_knee", (1.0, 0.0, 0.0)), "right_hip": ("right_knee", (1.0, 0.0, 0.0)),
}  # fmt: skip


def _frame(bone: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """An orthonormal frame [3, 3] (columns: bone, axis, bone x axis) from a bone direction and a
    hinge axis (made perpendicular to it)."""
    b = bone / bone.norm()
    a = axis - (axis @ b) * b
    a = a / a.norm()
    return torch.stack([b, a, torch.linalg.cross(b, a)], dim=1)


def template_pose(template: Template, rest_joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An authored pose as (global_orient [3], body_pose [63]) for a body whose T-pose joints are
    rest_joints [J, 3].

    A limb with directions for both its bones (shoulder and elbow, hip and knee) is posed as a hinge:
    the upper bone turns so that it points along its target and the hinge's axis is perpendicular to
    both targets, and the hinge bends about its own axis only (as elbows and knees do, within
    ``studio.fit.prior``'s limits). Any other directed bone takes the smallest rotation from its rest
    direction to its target (in the body frame); the remaining joints take their plain rotations."""
    directions, rotations = _mirrored(template)
    rest = rest_joints.double()
    glob = [torch.eye(3, dtype=torch.float64)] * 22
    local = torch.zeros(22, 3, dtype=torch.float64)
    hinge_angles: dict[str, tuple[torch.Tensor, float]] = {}

    def bone(joint: str) -> torch.Tensor:
        return rest[JOINT_INDEX[_bone_child(joint)]] - rest[JOINT_INDEX[joint]]

    for j in range(1, 22):
        name = next(n for n, i in JOINT_INDEX.items() if i == j)
        parent = glob[SMPLX_PARENTS[j]]
        if name in hinge_angles:  # the hinge bends about its own axis
            axis, angle = hinge_angles[name]
            local[j] = axis * angle
            glob[j] = parent @ _rotvec_to_matrix(local[j])
        elif name in directions and _bone_child(name) is not None:
            target = torch.tensor(directions[name], dtype=torch.float64)
            hinge = _HINGES.get(name)
            g = rotation_between(bone(name), target)
            if hinge is not None and hinge[0] in directions:
                lower = torch.tensor(directions[hinge[0]], dtype=torch.float64)
                rest_axis = torch.tensor(hinge[1], dtype=torch.float64)
                axis = torch.linalg.cross(target / target.norm(), lower / lower.norm())
                cos = float((target @ lower) / (target.norm() * lower.norm()))
                angle = math.acos(max(-1.0, min(1.0, cos)))
                if float(axis.norm()) > 0.05 and float(axis @ (g @ rest_axis)) > 0:  # bent the way the hinge bends
                    g = _frame(target, axis) @ _frame(bone(name), rest_axis).T
                else:  # (nearly) straight, or bent against the hinge: straight
                    angle = 0.0
                hinge_angles[hinge[0]] = (rest_axis, angle)
            local[j] = matrix_to_axis_angle(parent.T @ g)
            glob[j] = g
        else:
            local[j] = torch.tensor(rotations.get(name, (0.0, 0.0, 0.0)), dtype=torch.float64) * math.pi / 180
            glob[j] = parent @ _rotvec_to_matrix(local[j])
    orient = torch.tensor(template.global_orient, dtype=torch.float32) * math.pi / 180
    return orient, local[1:].reshape(63).float()


def _rotvec_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    from studio.body.base import axis_angle_to_matrix

    return axis_angle_to_matrix(rotvec)


def _cmu_labels() -> dict[str, str]:
    labels = {}
    for line in (CMU_DIR / "MANIFEST.tsv").read_text().splitlines()[1:]:
        cells = line.split("\t")
        if len(cells) >= 3:
            labels[cells[0]] = cells[2].strip().lower()
    return labels


@dataclasses.dataclass(frozen=True)
class CorpusItem:
    """One corpus entry before its pose is computed (retrieval reads only the text)."""

    key: str  # "cmu:13_02#0" or "authored:sit"
    text: str
    kind: str
    grip: bool


@functools.lru_cache(maxsize=1)
def corpus_index() -> tuple[CorpusItem, ...]:
    """Every entry of the corpus: the CMU frames (with CMU's trial descriptions), then the authored poses."""
    labels = _cmu_labels()
    items = [
        CorpusItem(f"cmu:{trial}#{frame}", labels.get(trial, trial), kind, grip)
        for trial, kinds in CMU_KINDS.items()
        for frame, (kind, grip) in enumerate(kinds)
    ]
    items += [CorpusItem(f"authored:{key}", t.text, t.kind, t.grip) for key, t in TEMPLATES.items()]
    return tuple(items)


@functools.lru_cache(maxsize=32)
def _cmu_trial(body_model, trial: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A CMU trial's frames retargeted onto the body model: global_orient [T, 3], body_pose [T, 63]."""
    from studio.motion import import_motion

    condition = import_motion(CMU_DIR / f"{trial}.bvh", body_model, fps=None)
    body_pose = condition.body["body_pose"].clone()
    if trial.startswith(_MIRROR_RIGHT_LEG):
        body_pose = torch.stack([_mirror_leg(p) for p in body_pose])
    return condition.body["global_orient"].clone(), body_pose


def _mirror_leg(body_pose: torch.Tensor) -> torch.Tensor:
    """The left leg's rotations copied to the right leg, mirrored (Y and Z negated)."""
    pose = body_pose.reshape(21, 3).clone()
    for part in ("hip", "knee", "ankle", "foot"):
        left, right = JOINT_INDEX[f"left_{part}"] - 1, JOINT_INDEX[f"right_{part}"] - 1
        pose[right] = pose[left] * torch.tensor([1.0, -1.0, -1.0])
    return pose.reshape(63)


def load_entry(body_model, item: CorpusItem) -> PoseEntry:
    """The pose of one corpus entry on ``body_model`` (CMU trials are retargeted once per process)."""
    source, _, name = item.key.partition(":")
    if source == "cmu":
        trial, _, frame = name.partition("#")
        orient, body_pose = _cmu_trial(body_model, trial)
        return PoseEntry(item.key, item.text, item.kind, orient[int(frame)], body_pose[int(frame)], item.grip)
    with torch.no_grad():
        rest = body_model.joints({"transl": torch.zeros(1, 3)})[0].cpu()
    orient, body_pose = template_pose(TEMPLATES[name], rest)
    return PoseEntry(item.key, item.text, item.kind, orient, body_pose, item.grip)


@dataclasses.dataclass(frozen=True)
class Retrieved:
    item: CorpusItem
    score: float  # cosine similarity of its text to the prompt


def retrieve(prompt_vector: np.ndarray | None, kinds: tuple[str, ...], *, encoder=None, top_k: int = 3) -> list[Retrieved]:
    """The ``top_k`` corpus entries of the accepted ``kinds`` whose text is nearest the prompt (the
    encoder's cosine similarity; without an encoder, every score is 0). Ties go to the kind the
    interaction lists first, then to corpus order."""
    candidates = [e for e in corpus_index() if e.kind in kinds]
    if not candidates:
        return []
    if encoder is None or prompt_vector is None:
        scores = np.zeros(len(candidates))
    else:
        scores = encoder.encode([e.text for e in candidates]) @ prompt_vector
    order = sorted(range(len(candidates)), key=lambda i: (-round(float(scores[i]), 6), kinds.index(candidates[i].kind), i))
    return [Retrieved(candidates[i], float(scores[i])) for i in order[:top_k]]


__all__ = [
    "CMU_DIR",
    "CMU_KINDS",
    "CorpusItem",
    "PoseEntry",
    "Retrieved",
    "TEMPLATES",
    "Template",
    "corpus_index",
    "load_entry",
    "retrieve",
    "template_pose",
]
