from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from studio.body import JOINT_INDEX, JOINT_NAMES
from studio.condition import Camera, HumanCondition, project
from studio.errors import StudioError


def make_condition(T=5, body_model="anny", **body) -> HumanCondition:
    body = {"body_pose": torch.randn(T, 63) * 0.2, "transl": torch.zeros(T, 3), **body}
    camera = Camera.look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), image_size=(480, 640), num_frames=T)
    return HumanCondition(body_model, body, camera, fps=24)


def test_slicing_and_indexing():
    cond = make_condition(T=6)
    assert len(cond[1:4]) == 3
    one = cond[-1]
    assert len(one) == 1 and torch.equal(one.body["body_pose"][0], cond.body["body_pose"][5])
    picked = cond[torch.tensor([0, 0, 5])]
    assert len(picked) == 3 and picked.fps == 24
    with pytest.raises(IndexError):
        cond[6]


def test_frozen_and_validated():
    cond = make_condition()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cond.fps = 10
    camera = Camera.look_at((0, 0, 3), (0, 0, 0), image_size=(64, 64), num_frames=2)
    with pytest.raises(StudioError, match="T=2"):
        HumanCondition("anny", {"body_pose": torch.zeros(3, 63)}, camera)
    with pytest.raises(StudioError, match="fps"):
        HumanCondition("anny", {"body_pose": torch.zeros(2, 63)}, camera, fps=0)


def test_save_load_round_trip_with_joints_in_camera_space(tmp_path, anny):
    cond = make_condition(T=4)
    path = cond.save(tmp_path / "motion.npz", body_model=anny)
    loaded = HumanCondition.load(path)
    assert loaded.body_model == "anny" and loaded.fps == 24 and loaded.camera.image_size == (480, 640)
    for k, v in cond.body.items():
        assert torch.allclose(loaded.body[k], v)
    assert torch.allclose(loaded.camera.K, cond.camera.K)
    raw = np.load(path)
    assert list(raw["joint_names"]) == list(JOINT_NAMES)
    joints3d = raw["joints3d"]
    assert joints3d.shape == (4, len(JOINT_NAMES), 3)
    # The camera is 3 m in front of the body: the pelvis is ~3 m deep, and projects near the centre.
    pelvis = joints3d[:, JOINT_INDEX["pelvis"]]
    assert np.allclose(pelvis[:, 2], 3.0 - anny({"transl": torch.zeros(1, 3)}).joints[0, 0, 2].item(), atol=0.05)
    uv = project(torch.from_numpy(pelvis[:, None]), cond.camera.K)[:, 0]
    assert torch.allclose(uv[:, 0], torch.tensor(320.0), atol=5)
    assert not raw["joint_valid"][JOINT_INDEX["jaw"]]


def test_smplx_condition_round_trip(tmp_path, smplx_body):
    cond = make_condition(T=2, body_model="smplx", betas=torch.randn(2, 10), expression=torch.zeros(2, 10))
    loaded = HumanCondition.load(cond.save(tmp_path / "m.npz", body_model=smplx_body))
    assert torch.allclose(loaded.body["betas"], cond.body["betas"])
    assert np.load(tmp_path / "m.npz")["joints3d"].shape == (2, len(JOINT_NAMES), 3)


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture()
def saved(tmp_path, anny):
    return make_condition(T=3).save(tmp_path / "ok.npz", body_model=anny)


def test_load_truncated_file(tmp_path, saved):
    data = saved.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(StudioError, match="truncated.npz: not a readable"):
        HumanCondition.load(bad)


def test_load_other_version_and_foreign_files(tmp_path, saved):
    arrays = dict(np.load(saved))
    newer = tmp_path / "newer.npz"
    _write_npz(newer, **{**arrays, "format_version": np.array(2)})
    with pytest.raises(StudioError, match="version 2.*upgrade studio"):
        HumanCondition.load(newer)
    foreign = tmp_path / "foreign.npz"
    _write_npz(foreign, x=np.zeros(3))
    with pytest.raises(StudioError, match="not a studio condition"):
        HumanCondition.load(foreign)
    text = tmp_path / "motion.npz"
    text.write_text("hello")
    with pytest.raises(StudioError, match="not a readable"):
        HumanCondition.load(text)
    with pytest.raises(StudioError, match="no such file"):
        HumanCondition.load(tmp_path / "missing.npz")


def test_load_wrong_shapes(tmp_path, saved):
    arrays = dict(np.load(saved))
    bad = tmp_path / "bad_pose.npz"
    _write_npz(bad, **{**arrays, "body/body_pose": np.zeros((3, 60), np.float32)})
    with pytest.raises(StudioError, match=r"body_pose.*\[T, 63\]"):
        HumanCondition.load(bad)
    bad_cam = tmp_path / "bad_cam.npz"
    _write_npz(bad_cam, **{**arrays, "camera_K": np.zeros((2, 3, 3), np.float32)})
    with pytest.raises(StudioError, match="bad_cam.npz"):
        HumanCondition.load(bad_cam)


def test_camera_resize_keeps_projection_proportional():
    cam = Camera.look_at((0, 0, 3), (0, 0, 0), image_size=(1080, 1920))
    small = cam.resized(512)
    assert small.image_size == (288, 512)
    p = torch.tensor([[[0.3, -0.2, 3.0]]])
    uv, uv_small = project(p, cam.K)[0, 0], project(p, small.K)[0, 0]
    assert torch.allclose(uv_small, uv * 512 / 1920, atol=1e-3)
    assert cam.resized((100, 200)).image_size == (100, 200)
    with pytest.raises(StudioError):
        cam.resized(0)
