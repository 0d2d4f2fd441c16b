"""Motion transfer: the reference person performing a motion, seen by the reference's camera.

The reference's body shape and camera are kept (view transfer). From the motion come the joint
rotations, the turns of the body about the vertical, and the root path, scaled by the ratio of the
two bodies' leg lengths, so the driving person's proportions and camera do not leak in. Both world
frames are Y up; the motion is turned about Y so that its first frame faces the way the reference
person faces, placed where the reference stands, with its lowest foot on the reference's ground.

Self-reenactment (``reenact_motion``): when the photo is a frame of the driving video, the video's
own camera and placement are kept instead, so the result can be compared with the video frame by frame.
"""

from __future__ import annotations

import dataclasses
import math

import roma
import torch

from studio.body.base import POSE_PARAM_DIMS, BodyModel, axis_angle_to_matrix, matrix_to_axis_angle
from studio.body.joints import JOINT_INDEX
from studio.condition import HumanCondition

_FEET = [JOINT_INDEX[n] for n in ("left_heel", "right_heel", "left_big_toe", "right_big_toe", "left_ankle", "right_ankle")]
_POSE_FIELDS = ("body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose")


def _leg_length(joints: torch.Tensor) -> float:
    """Hip -> knee -> ankle length of the left leg from joints [J, 3]."""
    hip, knee, ankle = (joints[JOINT_INDEX[n]] for n in ("left_hip", "left_knee", "left_ankle"))
    return float((knee - hip).norm() + (ankle - knee).norm())


def _yaw(rotation: torch.Tensor) -> float:
    """Heading of a body orientation [3, 3] about world Y (its forward axis projected on XZ)."""
    forward = rotation[:, 2]
    return math.atan2(float(forward[0]), float(forward[2]))


def transfer_motion(
    motion: HumanCondition,
    reference: HumanCondition,
    *,
    motion_model: BodyModel,
    reference_model: BodyModel,
    image_size: tuple[int, int] | None = None,
    keep_in_view: bool = True,
) -> tuple[HumanCondition, dict[str, float]]:
    """The reference person (one frame) doing ``motion`` (T frames), seen by the reference camera.

    Args:
        image_size: output (height, width); None keeps the reference image's size.
        keep_in_view: when the body would leave the picture, push it back along the ground and
            shorten its sideways travel, just enough (nearest placement first, then longest path).
    Returns:
        A HumanCondition of T frames on the reference's body model at the motion's fps, and the
        placement used: ``depth_factor`` (1 = where the reference stands), ``path_factor`` (1 = the
        whole scaled path), ``scale`` (reference / motion leg length).
    """
    T = motion.num_frames
    with torch.no_grad():  # each body's calls together: a body model keeps the last shape's rest model
        zero_pose = {k: torch.zeros(1, d) for k, d in POSE_PARAM_DIMS.items()}
        m_params = motion_model.complete_params(motion.body)
        m_joints = motion_model.joints(m_params)  # [T, J, 3]
        rest_m = motion_model.joints({**{k: v[:1] for k, v in m_params.items()}, **zero_pose})[0]
        r_params = reference_model.complete_params(reference.body)
        r_joints = reference_model.joints(r_params)[0]
        rest_r = reference_model.joints({**r_params, **zero_pose})[0]
    scale = _leg_length(rest_r) / _leg_length(rest_m)

    # Turn the motion about Y so its first frame faces like the reference.
    R_m = axis_angle_to_matrix(m_params["global_orient"])  # [T, 3, 3]
    R_r = axis_angle_to_matrix(r_params["global_orient"][0])
    turn = _yaw(R_r) - _yaw(R_m[0])
    Q = roma.rotvec_to_rotmat(torch.tensor([0.0, turn, 0.0]))
    orient = matrix_to_axis_angle(Q @ R_m)

    # Root path relative to the first frame, turned and scaled, starting where the reference stands.
    pelvis_m = m_joints[:, JOINT_INDEX["pelvis"]]
    path = (pelvis_m - pelvis_m[:1]) @ Q.T * scale
    body = {k: m_params[k].clone() for k in _POSE_FIELDS}
    body["global_orient"] = orient
    for key in reference_model.shape_dims:
        body[key] = r_params[key][:1].expand(T, -1).clone()
    body["transl"] = torch.zeros(T, 3)
    with torch.no_grad():
        placed = reference_model.joints(body)  # [T, J, 3] with zero translation
    start = r_joints[JOINT_INDEX["pelvis"]].clone()
    ground = float(r_joints[_FEET, 1].min())
    # Lowest foot of the first frame on the reference's ground (the motion's own height changes, such
    # as jumps, are kept by the path).
    start[1] = placed[0, JOINT_INDEX["pelvis"], 1] + ground - float(placed[0, _FEET, 1].min())
    camera = reference.camera.index([0] * T)
    if image_size is not None:
        camera = camera.resized(image_size)
    centre = -camera.extrinsics[0, :3, :3].T @ camera.extrinsics[0, :3, 3]  # the camera's position, world
    contact = placed[0, _FEET].min(0).values - placed[0, JOINT_INDEX["pelvis"]] + start  # a point on the ground
    contact[1] = ground
    # Only what the reference photo shows has to stay in the picture: a person photographed from the
    # waist up keeps that framing, legs out of view, rather than being pushed far back.
    shown = _inside(r_joints, camera)
    # Pushing back keeps one point of the picture fixed: where the feet touch the ground, or, when
    # the photo does not show the feet (that point would lie outside it), the pelvis or else the middle
    # of what it shows.
    feet_shown = bool(shown[_FEET].any())
    anchor = contact if feet_shown or not bool(shown.any()) else start if bool(shown[JOINT_INDEX["pelvis"]]) else r_joints[shown].mean(0)
    depth_factor, path_factor = _keep_in_view(placed, start, path, camera, centre, anchor, shown, open_bottom=not feet_shown) if keep_in_view else (1.0, 1.0)
    pelvis = _pelvis_path(start, path, centre, anchor, depth_factor, path_factor)
    body["transl"] = pelvis - placed[:, JOINT_INDEX["pelvis"]]
    cond = HumanCondition(body_model=reference_model.name, body=body, camera=camera, fps=motion.fps)
    return cond, {"depth_factor": depth_factor, "path_factor": path_factor, "scale": scale}


def _pelvis_path(start, path, centre, anchor, depth_factor: float, path_factor: float) -> torch.Tensor:
    """Pelvis positions [T, 3]: the start pushed back ``depth_factor`` times as far from the camera
    along the ray through ``anchor`` (the ground contact point, so the feet stay where the reference's
    were in the picture, on a ground that may not be level), plus ``path_factor`` of the sideways travel."""
    shift = centre + depth_factor * (anchor - centre) - anchor
    travel = path.clone()
    travel[:, [0, 2]] *= path_factor
    return start + shift + travel


MARGIN = 0.04  # of the picture's size, kept clear around the body


def _in_view(points: torch.Tensor, camera, *, margin: float = MARGIN, open_bottom: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels [T, N, 2] of world points [T, N, 3] seen by the camera's first T frames, and which of
    them lie in front of it and ``margin`` inside the picture [T, N] bool (below it too, with ``open_bottom``)."""
    from studio.condition import project, world_to_camera

    h, w = camera.image_size
    cam = world_to_camera(points, camera.extrinsics[: len(points)])
    uv = project(cam, camera.K[: len(points)])
    lo = torch.tensor([margin * w, margin * h])
    hi = torch.tensor([(1 - margin) * w, float("inf") if open_bottom else (1 - margin) * h])
    return uv, (cam[..., 2] > 0.1) & ((uv >= lo) & (uv <= hi)).all(-1)


def _inside(joints: torch.Tensor, camera) -> torch.Tensor:
    """Which joints [J, 3] (world) the camera's first frame shows, ``MARGIN`` inside the picture: [J] bool."""
    return _in_view(joints[None], camera)[1][0]


def _keep_in_view(
    placed, start, path, camera, centre, anchor, shown, *, open_bottom: bool = False, margin: float = MARGIN, min_height: float = 0.35
) -> tuple[float, float]:
    """How far to push the body back (x distance) and how much of its sideways travel to keep
    (x fraction) so that the joints the reference shows (``shown`` [J] bool) stay in view in every
    frame; with ``open_bottom`` (a photo cut above the feet) they may leave through the bottom edge,
    as they would in a video framed like the photo. The whole path is preferred, since a shortened
    path makes the feet slide, as long as the body's median height stays at least ``min_height`` of
    the picture; then the nearest placement."""
    h = camera.image_size[0]
    relative = placed - placed[:, JOINT_INDEX["pelvis"] : JOINT_INDEX["pelvis"] + 1]
    height = float(relative[..., 1].max() - relative[..., 1].min())
    head_room = 0.12 * height  # joints stop at the eyes and ears; keep the top of the head in view too
    fallback = None
    for path_factor in (1.0, 0.75, 0.5, 0.25, 0.0):
        for depth_factor in [1.0 + 0.15 * i for i in range(21)]:
            pelvis = _pelvis_path(start, path, centre, anchor, depth_factor, path_factor)
            points = relative + pelvis[:, None]
            top = points[:, JOINT_INDEX["head"]].clone()
            top[:, 1] += head_room
            points = torch.cat([points[:, shown], top[:, None]], dim=1)
            uv, inside = _in_view(points, camera, margin=margin, open_bottom=open_bottom)
            if bool(inside.all()):
                tall = float((uv[..., 1].amax(1) - uv[..., 1].amin(1)).median()) >= min_height * h
                if tall or path_factor == 0.0:
                    return depth_factor, path_factor
                fallback = fallback or (depth_factor, path_factor)
                break  # farther back only gets smaller
    return fallback or (4.0, 0.0)


def reenact_motion(
    motion: HumanCondition,
    reference: HumanCondition,
    *,
    frame: int,
    motion_model: BodyModel,
    reference_model: BodyModel,
    image_size: tuple[int, int] | None = None,
    camera_turns: torch.Tensor | None = None,
) -> HumanCondition:
    """Self-reenactment: the reference photo is frame ``frame`` of the video ``motion`` was captured
    from, so the video's own camera and placement are kept (nothing is pushed back or re-aimed).

    The motion is taken in its camera's space (turns and the root path relative to that frame, depth
    rescaled by the two fits' focal lengths) and attached to the reference's fitted body in its camera's
    space: frame ``frame`` reproduces the reference's fit exactly, and each joint's rotation is the
    reference's composed with the motion's change since that frame.

    Args:
        motion: T frames captured from the video; reference: its one-frame fit of the photo.
        frame: index of the photo in the video (0 <= frame < T).
        image_size: output (height, width); None keeps the reference image's size.
        camera_turns: [T, 3, 3] rotations from the camera of frame ``frame`` to each frame's (a
            handheld video's pan, ``studio.animate.camera_motion``); the output camera turns the same way.
    Returns:
        T frames on the reference's body (shape, camera) at the motion's fps.
    """
    T = motion.num_frames
    if not 0 <= frame < T:
        raise ValueError(f"frame must be in [0, {T}), got {frame}")
    with torch.no_grad():
        m_params = motion_model.complete_params(motion.body)
        m_pelvis = motion_model.joints(m_params)[:, JOINT_INDEX["pelvis"]]  # [T, 3]
        r_params = reference_model.complete_params(reference.body)
        r_pelvis = reference_model.joints(r_params)[0, JOINT_INDEX["pelvis"]]

    def to_camera(extrinsics: torch.Tensor, orient: torch.Tensor, pelvis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rot, t = extrinsics[..., :3, :3], extrinsics[..., :3, 3]
        return rot @ axis_angle_to_matrix(orient), (rot @ pelvis[..., None])[..., 0] + t

    Rm, pm = to_camera(motion.camera.extrinsics, m_params["global_orient"], m_pelvis)  # [T, 3, 3], [T, 3]
    Rr, pr = to_camera(reference.camera.extrinsics[0], r_params["global_orient"][0], r_pelvis)
    # The same picture seen with another focal length is the same picture at a proportional depth.
    f_m = motion.camera.K[:, 0, 0] / motion.camera.image_size[1]
    f_r = float(reference.camera.K[0, 0, 0]) / reference.camera.image_size[1]
    pm = pm.clone()
    pm[:, 2] *= f_r / f_m
    turns = torch.eye(3).expand(T, 3, 3) if camera_turns is None else torch.as_tensor(camera_turns, dtype=torch.float32)
    pc = pm + (turns @ (pr - pm[frame])[:, None])[..., 0]  # [T, 3] each frame's camera space
    Rc = Rm @ Rm[frame].T @ Rr  # [T, 3, 3]
    extrinsics = reference.camera.extrinsics[[0] * T].clone()  # [T, 4, 4]
    extrinsics[:, :3, :] = turns @ extrinsics[:, :3, :]
    orient = matrix_to_axis_angle(extrinsics[:, :3, :3].transpose(1, 2) @ Rc)
    pelvis = (extrinsics[:, :3, :3].transpose(1, 2) @ (pc - extrinsics[:, :3, 3])[..., None])[..., 0]  # [T, 3] world

    body = {"global_orient": orient}
    for key in _POSE_FIELDS:
        dim = POSE_PARAM_DIMS[key]
        m = axis_angle_to_matrix(m_params[key].reshape(T, dim // 3, 3))
        r = axis_angle_to_matrix(r_params[key][:1].reshape(1, dim // 3, 3))
        body[key] = matrix_to_axis_angle(r @ m[frame : frame + 1].transpose(-1, -2) @ m).reshape(T, dim)
    for key in reference_model.shape_dims:
        body[key] = r_params[key][:1].expand(T, -1).clone()
    body["transl"] = torch.zeros(T, 3)
    with torch.no_grad():
        placed = reference_model.joints(body)[:, JOINT_INDEX["pelvis"]]
    body["transl"] = pelvis - placed
    camera = dataclasses.replace(reference.camera.index([0] * T), extrinsics=extrinsics)
    if image_size is not None:
        camera = camera.resized(image_size)
    return HumanCondition(body_model=reference_model.name, body=body, camera=camera, fps=motion.fps)
