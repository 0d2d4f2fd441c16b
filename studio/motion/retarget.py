"""Mocap -> HumanCondition on a studio body model, and back out to BVH.

Retargeting works on global joint rotations. For each SMPL-X joint with a counterpart in the source
skeleton, the body's global rotation is the source joint's global rotation (in studio's axes) times a
fixed rest correction that turns the body's T-pose bone into the source's rest bone. Local rotations
follow from the globals, so source joints studio lacks (CMU's LHipJoint, Neck1, ...) fold into their
neighbours. The root trajectory is scaled by the ratio of leg lengths, starts at the origin, and is
put on the ground (the lowest foot over the whole motion touches y = the body's rest sole height).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import roma
import torch

from studio.body.base import BodyModel, matrix_to_axis_angle, rotation_between
from studio.body.joints import JOINT_INDEX, SMPLX_JOINT_NAMES, SMPLX_PARENTS
from studio.condition import Camera, HumanCondition, default_focal_length
from studio import validate
from studio.errors import StudioError
from studio.motion.bvh import BVH, read_bvh, write_bvh

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = (640, 480)  # (height, width): portrait, the usual framing of one person
_SIDES = {"left": ("Left", "L"), "right": ("Right", "R")}


def _source_names(side_word: str) -> dict[str, tuple[str, ...]]:
    """Candidate source names (CMU, Mixamo, SMPL-X, generic) for one side's SMPL-X joints."""
    s = side_word
    return {
        "hip": (f"{s}UpLeg", f"{s}Thigh", f"{s}Hip"),
        "knee": (f"{s}Leg", f"{s}Shin", f"{s}Knee", f"{s}LowLeg"),
        "ankle": (f"{s}Foot", f"{s}Ankle"),
        "foot": (f"{s}ToeBase", f"{s}Toe", f"{s}Toes"),
        "collar": (f"{s}Shoulder", f"{s}Collar", f"{s}Clavicle"),
        "shoulder": (f"{s}Arm", f"{s}UpArm", f"{s}UpperArm"),
        "elbow": (f"{s}ForeArm", f"{s}LowArm", f"{s}Elbow"),
        "wrist": (f"{s}Hand", f"{s}Wrist"),
    }


def joint_map(names: list[str]) -> dict[str, int]:
    """SMPL-X joint name -> index of the source joint that drives it, for BVH skeletons that use
    SMPL-X names, CMU names or Mixamo names (any ``prefix:`` such as ``mixamorig:`` is ignored)."""
    plain = [n.split(":")[-1] for n in names]
    lower = {n.lower(): i for i, n in enumerate(plain)}
    found: dict[str, int] = {}
    for j in SMPLX_JOINT_NAMES:  # skeletons written by studio (or SMPL-X tools)
        if j in lower:
            found[j] = lower[j]
    if len(found) >= 15:
        return found
    found = {}
    cmu = "lowerback" in lower
    spine = ("LowerBack", "Spine", "Spine1") if cmu else ("Spine", "Spine1", "Spine2")
    centre = {"pelvis": ("Hips", "Pelvis", "Root"), "neck": ("Neck",), "head": ("Head",)}
    for k, name in enumerate(("spine1", "spine2", "spine3")):
        centre[name] = (spine[k],)
    for j, candidates in centre.items():
        for c in candidates:
            if c.lower() in lower:
                found[j] = lower[c.lower()]
                break
    for side, (word, letter) in _SIDES.items():
        for part, candidates in _source_names(word).items():
            for c in candidates + tuple(c.replace(word, letter, 1) for c in candidates):
                if c.lower() in lower:
                    found[f"{side}_{part}"] = lower[c.lower()]
                    break
    return found


# The child whose direction defines each limb bone, for the rest correction. Only limbs are
# corrected: rigs disagree about where spine and collar bones point even in the same posture, while a
# limb's direction is the posture itself (CMU's rest legs are splayed, Mixamo's arms often angled).
_BONE_CHILD = {
    f"{s}_{a}": f"{s}_{b}"
    for s in ("left", "right")
    for a, b in (("hip", "knee"), ("knee", "ankle"), ("ankle", "foot"), ("shoulder", "elbow"), ("elbow", "wrist"))
}


def _axes_of(bvh: BVH, mapping: dict[str, int]) -> torch.Tensor:
    """Rotation [3, 3] from the file's axes to studio's (Y up, facing +Z, left at +X), found from the
    rest skeleton: up is pelvis -> head, left is right hip -> left hip."""
    rest = bvh.rest_positions()
    up = rest[mapping["head"]] - rest[mapping["pelvis"]]
    left = rest[mapping["left_hip"]] - rest[mapping["right_hip"]]
    if "left_shoulder" in mapping and "right_shoulder" in mapping:
        left = left + rest[mapping["left_shoulder"]] - rest[mapping["right_shoulder"]]
    up = up / np.linalg.norm(up)
    left = left - left.dot(up) * up
    left = left / np.linalg.norm(left)
    forward = np.cross(left, up)
    # Rows: the file's components of studio's X (left), Y (up), Z (forward).
    return torch.from_numpy(np.stack([left, up, forward])).double()


def bvh_to_condition(
    path: str | Path,
    body_model: BodyModel,
    *,
    fps: float | None = 30.0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> HumanCondition:
    """Import a BVH file onto ``body_model`` (see the module docstring).

    Args:
        fps: resample to this frame rate (None: keep the file's).
    """
    bvh = read_bvh(path)
    mapping = joint_map(bvh.names)
    needed = ("pelvis", "head", "left_hip", "right_hip", "left_knee", "right_knee")
    missing = [n for n in needed if n not in mapping]
    if missing:
        raise StudioError(
            f"{path}: cannot map the skeleton onto SMPL-X joints (no {', '.join(missing)}); "
            "studio reads BVH with SMPL-X, CMU or Mixamo joint names"
        )
    frames = _resample_indices(bvh.motion.shape[0], bvh.fps, fps, what=str(path))
    bvh.motion = bvh.motion[frames]
    out_fps = bvh.fps if fps is None else float(fps)
    studio_skeleton = all(bvh.names[i].split(":")[-1] == n for n, i in mapping.items())
    # file -> studio axes: studio's own files (SMPL-X names) are in studio's axes already.
    C = torch.eye(3, dtype=torch.float64) if studio_skeleton else _axes_of(bvh, mapping)
    rot, pos = bvh.global_transforms()  # [F, J, 3, 3], [F, J, 3] file axes
    rot = C @ rot @ C.T
    pos = pos @ C.T
    rest_src = torch.from_numpy(bvh.rest_positions()).double() @ C.T
    F = rot.shape[0]

    with torch.no_grad():
        rest = body_model.joints({"transl": torch.zeros(1, 3)})[0].double()  # [J, 3] T-pose, world
    glob = torch.eye(3, dtype=torch.float64).repeat(F, 55, 1, 1)
    for j, name in enumerate(SMPLX_JOINT_NAMES):
        parent = SMPLX_PARENTS[j]
        if name in mapping:
            correction = torch.eye(3, dtype=torch.float64)
            child = _BONE_CHILD.get(name)
            if child is not None and child in mapping:
                ours = rest[JOINT_INDEX[child]] - rest[j]
                theirs = rest_src[mapping[child]] - rest_src[mapping[name]]
                correction = rotation_between(ours, theirs)
            glob[:, j] = rot[:, mapping[name]] @ correction
        elif parent >= 0:
            glob[:, j] = glob[:, parent]
    local = glob.clone()
    for j in range(1, 55):
        local[:, j] = glob[:, SMPLX_PARENTS[j]].transpose(-1, -2) @ glob[:, j]
    rotvec = matrix_to_axis_angle(local.float())  # [F, 55, 3]
    # Root trajectory, scaled by leg length (hip -> ankle, or hip -> knee -> ankle chain).
    leg_src = _leg_length(rest_src, mapping)
    leg_ours = float((rest[JOINT_INDEX["left_knee"]] - rest[JOINT_INDEX["left_hip"]]).norm() + (rest[JOINT_INDEX["left_ankle"]] - rest[JOINT_INDEX["left_knee"]]).norm())
    scale = leg_ours / leg_src
    pelvis = pos[:, mapping["pelvis"]].float() * scale
    logger.info("BVH %s: %d frames at %.1f fps, %d of 55 SMPL-X joints mapped, scale %.4f", path, F, out_fps, len(mapping), scale)
    body = {
        "global_orient": rotvec[:, 0],
        "body_pose": rotvec[:, 1:22].reshape(F, 63),
        "left_hand_pose": torch.zeros(F, 45),
        "right_hand_pose": torch.zeros(F, 45),
        "jaw_pose": torch.zeros(F, 3),
    }
    return motion_condition(body_model, body, pelvis, fps=out_fps, image_size=image_size)


def _leg_length(rest: torch.Tensor, mapping: dict[str, int]) -> float:
    hip, knee = rest[mapping["left_hip"]], rest[mapping["left_knee"]]
    length = float((knee - hip).norm())
    if "left_ankle" in mapping:
        length += float((rest[mapping["left_ankle"]] - knee).norm())
    else:
        length *= 2.0
    if not length > 0:
        raise StudioError("the BVH skeleton's legs have no length")
    return length


def _resample_indices(n: int, fps_in: float, fps_out: float | None, *, what: str) -> np.ndarray:
    """Nearest source frame for each output frame; the frame count is checked before anything is
    allocated (a BVH with a Frame Time of 1000 s resampled to 30 fps would be millions of frames)."""
    fps_in = validate.fps(fps_in, name=f"{what}: its frame rate")
    if fps_out is not None:
        fps_out = validate.fps(fps_out, name="fps")
    count = validate.resampled_count(n, fps_in, fps_out, what=what)
    if fps_out is None or abs(fps_out - fps_in) < 1e-6:
        return np.arange(n)
    return np.minimum(np.round(np.arange(count) * fps_in / fps_out).astype(int), n - 1)


def motion_condition(
    body_model: BodyModel,
    body: dict[str, torch.Tensor],
    pelvis: torch.Tensor,
    *,
    fps: float,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> HumanCondition:
    """A HumanCondition from pose fields and a pelvis trajectory [T, 3] (world, metres): the motion
    starts at the origin, its lowest foot touches the ground, and a camera frames it."""
    T = pelvis.shape[0]
    shape = {k: v.expand(T, -1).clone() for k, v in body_model.default_shape().items()}
    with torch.no_grad():
        rest_joints = body_model.joints({"transl": torch.zeros(1, 3)})[0]
        params = {**body, **shape, "transl": pelvis - rest_joints[0]}
        joints = body_model.joints(params)
    feet = [JOINT_INDEX[n] for n in ("left_heel", "right_heel", "left_big_toe", "right_big_toe", "left_ankle", "right_ankle")]
    ground = float(rest_joints[feet, 1].min())  # the rest body's sole height
    shift = torch.zeros(3)
    shift[[0, 2]] = -pelvis[0, [0, 2]]
    shift[1] = ground - float(joints[:, feet, 1].min())
    params["transl"] = params["transl"] + shift
    joints = joints + shift
    camera = frame_camera(joints, image_size=image_size)
    return HumanCondition(body_model=body_model.name, body=params, camera=camera, fps=fps)


def frame_camera(joints: torch.Tensor, *, image_size: tuple[int, int], margin: float = 1.15) -> Camera:
    """A camera in front of the body (its facing in the first frame) that keeps all joints [T, J, 3] in
    view: static when the body stays within about a metre, otherwise following it sideways."""
    T = joints.shape[0]
    h, w = image_size
    f = default_focal_length(image_size)
    pelvis = joints[:, JOINT_INDEX["pelvis"]]
    left = joints[0, JOINT_INDEX["left_hip"]] - joints[0, JOINT_INDEX["right_hip"]]
    forward = torch.linalg.cross(left, torch.tensor([0.0, 1.0, 0.0]))
    forward[1] = 0.0
    forward = forward / forward.norm().clamp_min(1e-6)
    lo, hi = joints.amin(dim=(0, 1)), joints.amax(dim=(0, 1))
    travel = float((pelvis[:, [0, 2]].amax(0) - pelvis[:, [0, 2]].amin(0)).norm())
    follow = travel > 1.0
    centre = pelvis.clone() if follow else ((lo + hi) / 2).expand(T, 3).clone()
    if follow:  # smooth the followed path so the camera does not shake with the steps
        kernel = max(1, T // 10)
        padded = torch.cat([centre[:1].expand(kernel, 3), centre, centre[-1:].expand(kernel, 3)])
        centre = torch.stack([padded[t : t + 2 * kernel + 1].mean(0) for t in range(T)])
        extent = (joints - pelvis[:, None]).abs().amax(dim=(0, 1)) * 2
    else:
        extent = hi - lo
    centre[:, 1] = float((lo[1] + hi[1]) / 2)
    height = float(max(extent[1], 0.5)) * margin
    width = float(max(extent[0], extent[2], 0.5)) * margin
    distance = max(height * f / h, width * f / w) + float(max(extent[0], extent[2])) / 2
    eyes = centre + forward * distance
    cameras = [Camera.look_at(eyes[t].tolist(), centre[t].tolist(), image_size=image_size, focal=f) for t in range(T)] if follow else [
        Camera.look_at(eyes[0].tolist(), centre[0].tolist(), image_size=image_size, focal=f, num_frames=T)
    ]
    return Camera(
        K=torch.cat([c.K for c in cameras]),
        extrinsics=torch.cat([c.extrinsics for c in cameras]),
        image_size=(h, w),
    )


def smplx_npz_to_condition(
    path: str | Path,
    body_model: BodyModel,
    *,
    fps: float | None = 30.0,
    up: str = "auto",
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> HumanCondition:
    """Import SMPL-X/SMPL-H parameters from an .npz: AMASS-style (``poses`` [T, 156 or 165], ``trans``,
    ``mocap_frame_rate``) or with smplx field names (``global_orient``, ``body_pose``, ...,
    ``transl``). Rotations carry over as they are (the same joints and rest pose); shape parameters
    of another body model do not, so the target body keeps its own shape.

    Args:
        up: the file's up axis: "y", "z", or "auto" (z for AMASS-style files, whose convention it is).
    """
    from studio.media import read_npz

    path = Path(path)
    up = validate.one_of(up, ("auto", "y", "z"), name="the up axis (--up)")
    arrays = read_npz(path, what="SMPL-X motion (.npz)")

    def field(key: str, default: np.ndarray | None = None, *, limit: float = 1e3) -> np.ndarray:
        value = arrays.get(key, default)
        if value is None:
            raise StudioError(f"{path}: no '{key}' entry")
        return validate.finite(value, name=f"{path}: '{key}'", limit=limit).astype(np.float32)

    amass = "poses" in arrays
    if amass:
        poses = field("poses")
        if poses.ndim != 2 or poses.shape[1] not in (156, 165):
            raise StudioError(f"{path}: 'poses' must be [T, 156] (SMPL-H) or [T, 165] (SMPL-X), got {list(poses.shape)}")
        T = poses.shape[0]
        trans = field("trans", np.zeros((T, 3), np.float32), limit=validate.MAX_COORDINATE)
        if poses.shape[1] == 165:  # root, 21 body, jaw, 2 eyes, 2x15 hands
            hands = poses[:, 75:165]
            jaw = poses[:, 66:69]
        else:  # root, 21 body, 2x15 hands
            hands = poses[:, 66:156]
            jaw = np.zeros((T, 3), np.float32)
        body = {
            "global_orient": poses[:, :3],
            "body_pose": poses[:, 3:66],
            "jaw_pose": jaw,
            "left_hand_pose": hands[:, :45],
            "right_hand_pose": hands[:, 45:],
        }
        rate_key = next((k for k in ("mocap_frame_rate", "mocap_framerate", "fps") if k in arrays), None)
    elif "body_pose" in arrays:
        T = np.asarray(arrays["body_pose"]).shape[0] if np.asarray(arrays["body_pose"]).ndim else 0
        body = {}
        for key, dim in (("global_orient", 3), ("body_pose", 63), ("jaw_pose", 3), ("left_hand_pose", 45), ("right_hand_pose", 45)):
            value = field(key, np.zeros((T, dim), np.float32))
            if value.ndim == 0 or value.shape[0] != T or value.size != T * dim:
                raise StudioError(f"{path}: '{key}' must be [T, {dim}] with T={T}, got {list(value.shape)}")
            body[key] = value.reshape(T, dim)
        trans = field("transl", np.zeros((T, 3), np.float32), limit=validate.MAX_COORDINATE)
        rate_key = next((k for k in ("fps", "mocap_frame_rate") if k in arrays), None)
    else:
        raise StudioError(f"{path}: no 'poses' (AMASS) or 'body_pose' (smplx) entry; not an SMPL-X motion file")
    if T == 0:
        raise StudioError(f"{path}: the motion has no frames")
    if trans.shape != (T, 3):
        raise StudioError(f"{path}: the translation must be [T, 3] with T={T}, got {list(trans.shape)}")
    src_fps = 30.0
    if rate_key is not None:
        rate = field(rate_key, limit=None)
        if rate.size != 1:
            raise StudioError(f"{path}: '{rate_key}' must be one number, got {list(rate.shape)}")
        src_fps = validate.fps(float(rate.reshape(-1)[0]), name=f"{path}: '{rate_key}'")
    z_up = up == "z" or (up == "auto" and amass)
    frames = _resample_indices(T, src_fps, fps, what=str(path))
    out = {k: torch.from_numpy(v[frames]) for k, v in body.items()}
    pelvis = torch.from_numpy(trans[frames])
    if z_up:  # Z up, Y forward -> Y up, Z forward: a -90 degree turn about X
        R = roma.rotvec_to_rotmat(torch.tensor([-np.pi / 2, 0.0, 0.0]))
        out["global_orient"] = roma.rotmat_to_rotvec(R @ roma.rotvec_to_rotmat(out["global_orient"]))
        pelvis = pelvis @ R.T
    return motion_condition(body_model, out, pelvis, fps=src_fps if fps is None else float(fps), image_size=image_size)


def import_motion(
    path: str | Path,
    body_model: BodyModel,
    *,
    fps: float | None = 30.0,
    up: str = "auto",
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
) -> HumanCondition:
    """A BVH or SMPL-X .npz motion file onto ``body_model`` (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bvh":
        return bvh_to_condition(path, body_model, fps=fps, image_size=image_size)
    if suffix == ".npz":
        return smplx_npz_to_condition(path, body_model, fps=fps, up=up, image_size=image_size)
    raise StudioError(f"{path}: unsupported motion file '{suffix or '(no suffix)'}'; give a .bvh or an SMPL-X .npz")


def export_bvh(condition: HumanCondition, path: str | Path, *, body_model: BodyModel) -> Path:
    """Write a condition's motion as a BVH with SMPL-X joint names (55 joints, metres, Y up)."""
    if body_model.name != condition.body_model:
        raise StudioError(f"this motion is for the '{condition.body_model}' body model, not '{body_model.name}'")
    p = body_model.complete_params(condition.body)
    from studio.body.base import full_pose_matrices

    rotations = full_pose_matrices(p)  # [T, 55, 3, 3]
    first = {k: v[:1] for k, v in p.items()}
    for key in ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "transl"):
        first[key] = torch.zeros_like(first[key])
    with torch.no_grad():
        rest = body_model.joints(first)[0, :55]  # T-pose with this motion's shape
        pelvis = body_model.joints(p)[:, 0]
    offsets = rest.clone()
    for j in range(1, 55):
        offsets[j] = rest[j] - rest[SMPLX_PARENTS[j]]
    return write_bvh(
        path,
        names=list(SMPLX_JOINT_NAMES),
        parents=list(SMPLX_PARENTS),
        offsets=offsets.cpu().numpy(),
        rotations=rotations.cpu().numpy(),
        root_positions=pelvis.cpu().numpy(),
        fps=condition.fps,
    )
