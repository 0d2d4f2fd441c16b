"""The one named joint set every body model in studio speaks, and the body-part labels.

Joints are SMPL-X's 55 joints in SMPL-X order, followed by 21 surface landmarks (nose, eyes, ears,
toes, heels and fingertips, named as in the smplx package) that OpenPose-style skeletons need.
Every backend returns all ``NUM_JOINTS`` positions plus a validity mask, so a pipeline can index by
name without knowing which body model made the condition.
"""

from __future__ import annotations

SMPLX_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw",
    "left_eye_smplhf", "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2", "left_middle3",
    "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2", "right_middle3",
    "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1", "right_ring2", "right_ring3",
    "right_thumb1", "right_thumb2", "right_thumb3",
)  # fmt: skip

# Parent of each SMPL-X joint (the SMPL-X kinematic tree), -1 for the root.
SMPLX_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)  # fmt: skip

LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    "left_thumb_tip", "left_index_tip", "left_middle_tip", "left_ring_tip", "left_pinky_tip",
    "right_thumb_tip", "right_index_tip", "right_middle_tip", "right_ring_tip", "right_pinky_tip",
)  # fmt: skip

JOINT_NAMES: tuple[str, ...] = SMPLX_JOINT_NAMES + LANDMARK_NAMES
NUM_JOINTS = len(JOINT_NAMES)
NUM_SMPLX_JOINTS = len(SMPLX_JOINT_NAMES)
NUM_BODY_JOINTS = 21  # joints 1..21: the ones body_pose rotates
NUM_HAND_JOINTS = 15
JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

# Body parts for the semantic map: one per joint that drives a body segment. Every vertex is labelled
# by the joint that moves it most, with fingers folded into the hand and jaw and eyes into the head.
BODY_PART_NAMES: tuple[str, ...] = (
    "pelvis", "left_thigh", "right_thigh", "lower_spine", "left_calf", "right_calf", "mid_spine",
    "left_foot", "right_foot", "chest", "left_toes", "right_toes", "neck", "left_shoulder",
    "right_shoulder", "head", "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm",
    "left_hand", "right_hand",
)  # fmt: skip
NUM_BODY_PARTS = len(BODY_PART_NAMES)

# Fixed RGB colour per body part (index = part id + 1; 0 is the background, black). Hues are spread so
# that neighbouring parts differ and left/right sides differ in colour, not only in brightness.
BODY_PART_COLORS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # background
    (255, 255, 255),  # pelvis
    (230, 25, 75), (60, 180, 75),  # thighs L/R
    (255, 225, 25),  # lower spine
    (245, 130, 48), (0, 130, 200),  # calves L/R
    (145, 30, 180),  # mid spine
    (70, 240, 240), (240, 50, 230),  # feet L/R
    (210, 245, 60),  # chest
    (250, 190, 212), (0, 128, 128),  # toes L/R
    (220, 190, 255),  # neck
    (170, 110, 40), (255, 250, 200),  # shoulders L/R
    (128, 0, 0),  # head
    (170, 255, 195), (128, 128, 0),  # upper arms L/R
    (255, 215, 180), (0, 0, 128),  # forearms L/R
    (128, 128, 128), (255, 99, 71),  # hands L/R
)  # fmt: skip


def joint_to_part(joint: int) -> int:
    """Body-part id (0..NUM_BODY_PARTS-1) of the segment a SMPL-X joint (0..54) drives."""
    if joint < NUM_BODY_PARTS:
        return joint
    if joint in (22, 23, 24):  # jaw, eyes
        return JOINT_INDEX["head"]
    if 25 <= joint < 40:
        return JOINT_INDEX["left_wrist"]
    if 40 <= joint < 55:
        return JOINT_INDEX["right_wrist"]
    raise ValueError(f"joint index {joint} is not a SMPL-X joint (0..54)")


# OpenPose / DWPose skeleton (COCO-18 body + 21-point hands) in terms of JOINT_NAMES. "neck" in
# OpenPose is the midpoint of the shoulders, not SMPL-X's neck joint; it is derived in the renderer.
OPENPOSE_BODY: tuple[str, ...] = (
    "nose", "@neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def openpose_hand(side: str) -> tuple[str, ...]:
    """The 21 OpenPose hand keypoints of one side ("left" or "right") as JOINT_NAMES."""
    names = [f"{side}_wrist"]
    for finger in ("thumb", "index", "middle", "ring", "pinky"):
        names += [f"{side}_{finger}1", f"{side}_{finger}2", f"{side}_{finger}3", f"{side}_{finger}_tip"]
    return tuple(names)


OPENPOSE_HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if k == 0 else 4 * f + k, 4 * f + k + 1) for f in range(5) for k in range(4)
)
