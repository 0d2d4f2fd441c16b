"""Mocap import (BVH with CMU/Mixamo/SMPL-X names, SMPL-X/AMASS .npz), retargeting and BVH export."""

from __future__ import annotations

import numpy as np
import pytest
import roma
import torch
from conftest import ASSETS

from studio.body.joints import JOINT_INDEX
from studio.condition import HumanCondition, project, world_to_camera
from studio.errors import StudioError
from studio.motion import export_bvh, import_motion, joint_map, read_bvh

RUN = ASSETS / "media" / "cmu_02_03_run.bvh"
FEET = [JOINT_INDEX[n] for n in ("left_heel", "right_heel", "left_big_toe", "right_big_toe", "left_ankle", "right_ankle")]


@pytest.fixture(scope="module")
def run(anny):
    return import_motion(RUN, anny, fps=30.0)


def test_read_cmu_bvh():
    bvh = read_bvh(RUN)
    assert len(bvh.names) == 31 and bvh.motion.shape == (174, 96)
    assert bvh.fps == pytest.approx(120.0, rel=1e-3)
    rot, pos = bvh.global_transforms()
    assert rot.shape == (174, 31, 3, 3) and pos.shape == (174, 31, 3)
    assert torch.allclose(rot[5] @ rot[5].transpose(-1, -2), torch.eye(3, dtype=rot.dtype).expand(31, 3, 3), atol=1e-9)


def test_joint_maps_for_cmu_mixamo_and_smplx_names():
    cmu = joint_map(read_bvh(RUN).names)
    assert {"pelvis", "spine1", "left_hip", "left_knee", "left_wrist", "head"} <= set(cmu)
    mixamo = ["mixamorig:" + n for n in ("Hips", "Spine", "Spine1", "Spine2", "Neck", "Head", "LeftUpLeg", "LeftLeg", "LeftFoot", "RightUpLeg", "RightLeg", "RightFoot", "LeftArm", "LeftForeArm", "LeftHand")]
    m = joint_map(mixamo)
    assert m["spine1"] == mixamo.index("mixamorig:Spine") and m["spine3"] == mixamo.index("mixamorig:Spine2")
    assert m["left_elbow"] == mixamo.index("mixamorig:LeftForeArm")
    from studio.body.joints import SMPLX_JOINT_NAMES

    assert joint_map(list(SMPLX_JOINT_NAMES))["right_wrist"] == SMPLX_JOINT_NAMES.index("right_wrist")


def test_bvh_import_resamples_grounds_and_frames(run, anny):
    assert run.num_frames == 44 and run.fps == 30.0  # 174 frames at 120 fps -> 30 fps
    # Frame 0 of the CMU file is a T-pose: the limbs' rotations are small.
    limbs = run.body["body_pose"][0].reshape(21, 3)[[0, 1, 3, 4, 15, 16, 17, 18]]
    assert limbs.norm(dim=-1).max() < 0.3
    joints = run.posed(anny).joints
    rest = anny.joints({"transl": torch.zeros(1, 3)})[0]
    assert float(joints[:, FEET, 1].min()) == pytest.approx(float(rest[FEET, 1].min()), abs=1e-4)  # on the ground
    assert joints[0, 0, [0, 2]].abs().max() < 1e-4  # starts at the origin
    # The runner covers ground, and the camera keeps every joint in view.
    assert float((joints[-1, 0] - joints[0, 0]).norm()) > 1.0
    uv = project(world_to_camera(joints, run.camera.extrinsics), run.camera.K)
    h, w = run.camera.image_size
    assert (uv[..., 0] > 0).all() and (uv[..., 0] < w).all() and (uv[..., 1] > 0).all() and (uv[..., 1] < h).all()


def test_bvh_export_round_trip(run, anny, tmp_path):
    out = export_bvh(run, tmp_path / "run.bvh", body_model=anny)
    back = import_motion(out, anny, fps=None)
    assert back.num_frames == run.num_frames
    a, b = run.posed(anny).joints[:, :22], back.posed(anny).joints[:, :22]
    assert torch.allclose(a - a[:, :1], b - b[:, :1], atol=1e-4)
    assert read_bvh(out).names[0] == "pelvis"


def _rotated_to_z_up(cond: HumanCondition):
    R = roma.rotvec_to_rotmat(torch.tensor([np.pi / 2, 0.0, 0.0]))  # Y up -> Z up
    orient = roma.rotmat_to_rotvec(R @ roma.rotvec_to_rotmat(cond.body["global_orient"]))
    trans = cond.body["transl"] @ R.T
    return orient, trans


def test_amass_npz_import(run, anny, tmp_path):
    orient, trans = _rotated_to_z_up(run)
    T = run.num_frames
    poses = np.zeros((T, 156), np.float32)
    poses[:, :3] = orient.numpy()
    poses[:, 3:66] = run.body["body_pose"].numpy()
    path = tmp_path / "amass.npz"
    np.savez(path, poses=poses, trans=trans.numpy(), betas=np.zeros(16), mocap_framerate=np.array(30.0), gender=np.array("neutral"))
    back = import_motion(path, anny, fps=None)
    assert back.num_frames == T and back.fps == 30.0
    assert torch.allclose(back.body["body_pose"], run.body["body_pose"], atol=1e-5)
    a, b = run.posed(anny).joints, back.posed(anny).joints
    assert torch.allclose(a - a[:, :1], b - b[:, :1], atol=1e-3)  # Z-up converted back to Y-up


def test_smplx_field_npz_import(run, anny, tmp_path):
    path = tmp_path / "smplx.npz"
    body = {k: v.numpy() for k, v in run.body.items() if k != "phenotype"}
    np.savez(path, **body, fps=np.array(30.0))
    back = import_motion(path, anny, fps=15.0)
    assert back.num_frames == 22
    assert torch.allclose(back.body["body_pose"], run.body["body_pose"][::2], atol=1e-5)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.bvh", "", "empty"),
        ("notes.bvh", "hello world", "not a valid BVH"),
        ("cut.bvh", RUN.read_text()[: len(RUN.read_text()) // 2], "truncated"),
        ("no_legs.bvh", "HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 3 Xposition Yposition Zposition\n}\nMOTION\nFrames: 1\nFrame Time: 0.1\n0 0 0\n", "cannot map"),
        ("bad.npz", "not a zip", "not a readable SMPL-X motion"),
        ("motion.txt", "x", "unsupported motion file"),
    ],
)
def test_bad_motion_files(anny, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(StudioError, match=message):
        import_motion(path, anny)


def test_npz_without_motion_keys(anny, tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(StudioError, match="no 'poses'"):
        import_motion(path, anny)
