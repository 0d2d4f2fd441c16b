"""Body fitting against known ground truth, its pieces, and both body backends."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import ASSETS

from studio.body.joints import JOINT_INDEX
from studio.condition import HumanCondition, project
from studio.fit import BodyFitter, FitConfig
from studio.fit.evaluation import EVAL_JOINTS, mpjpe, pa_mpjpe, synthetic_keypoints
from studio.body.base import rotation_between
from studio.fit.fitter import _solve_translation
from studio.fit.prior import limit_penalty
from studio.motion import import_motion


def in_front_of(cond: HumanCondition, fitter: BodyFitter, distance: float = 4.0) -> HumanCondition:
    """The motion seen by the fitter's camera, the body ``distance`` metres in front of it."""
    camera = fitter.camera(cond.camera.image_size, cond.num_frames)
    body = dict(cond.body)
    body["transl"] = body["transl"] + torch.tensor([0.0, 0.0, -distance])
    return dataclasses.replace(cond, body=body, camera=camera)


@pytest.fixture(scope="module")
def run_motion(anny):
    return import_motion(ASSETS / "media" / "cmu_02_03_run.bvh", anny, fps=30.0)


def test_fit_recovers_a_known_mocap_pose(anny, run_motion):
    fitter = BodyFitter(anny)
    truth = in_front_of(run_motion[4:20], fitter)
    kp = synthetic_keypoints(truth, anny, noise_px=2.0, world_noise_m=0.02, dropout=0.05, seed=1)
    fitted = fitter.fit(kp)
    assert fitted.num_frames == 16 and fitted.body_model == "anny"
    gt = truth.joints3d(anny)[:, EVAL_JOINTS].numpy()
    pred = fitted.joints3d(anny)[:, EVAL_JOINTS].numpy()
    assert pa_mpjpe(pred, gt) < 0.04  # metres
    assert mpjpe(pred, gt) < 0.06
    # And it reprojects onto the keypoints.
    uv = project(fitted.joints3d(anny), fitted.camera.K).numpy()
    ok = kp.confidence > 0
    assert np.linalg.norm(uv - kp.points, axis=-1)[ok].mean() < 8.0


def test_fit_beats_its_initialisation_and_holds_missing_frames(anny, run_motion):
    fitter = BodyFitter(anny, FitConfig(iterations=0, image_iterations=0, shape_iterations=0))
    truth = in_front_of(run_motion[10:18], fitter)
    kp = synthetic_keypoints(truth, anny, noise_px=1.0, seed=2)
    kp.confidence[3] = 0.0
    kp.world_confidence[3] = 0.0
    gt = truth.joints3d(anny)[:, EVAL_JOINTS].numpy()
    init = fitter.fit(kp).joints3d(anny)[:, EVAL_JOINTS].numpy()
    refined = BodyFitter(anny).fit(kp)
    after = refined.joints3d(anny)[:, EVAL_JOINTS].numpy()
    assert pa_mpjpe(after, gt) < pa_mpjpe(init, gt)
    assert np.isfinite(after).all()
    # The undetected frame lies between its neighbours instead of flying off.
    step = np.linalg.norm(after[3, 0] - after[2, 0]) + np.linalg.norm(after[4, 0] - after[3, 0])
    assert step < 0.3


def test_streaming_chunks_share_one_shape(anny, run_motion):
    fitter = BodyFitter(anny, FitConfig(chunk_size=4, iterations=5, shape_iterations=5))
    truth = in_front_of(run_motion[:8], fitter)
    kp = synthetic_keypoints(truth, anny, seed=3)
    a = fitter.fit_chunk(kp[:4])
    b = fitter.fit_chunk(kp[4:])
    assert torch.equal(a.body["phenotype"][0], b.body["phenotype"][-1])
    assert HumanCondition.concat([a, b]).num_frames == 8


def test_fit_with_the_smplx_backend(smplx_body):
    fitter = BodyFitter(smplx_body, FitConfig(iterations=40))
    params = {"body_pose": torch.zeros(6, 63), "transl": torch.tensor([[0.0, 0.2, -3.0]]).expand(6, 3).clone()}
    params["body_pose"][:, 3 * (JOINT_INDEX["left_knee"] - 1)] = torch.linspace(0.0, 1.0, 6)  # bend the left knee
    truth = HumanCondition(body_model="smplx", body=smplx_body.complete_params(params), camera=fitter.camera((480, 640), 6), fps=10.0)
    kp = synthetic_keypoints(truth, smplx_body, seed=4)
    fitted = fitter.fit(kp)
    assert set(fitted.body) >= {"betas", "expression", "body_pose"}
    uv = project(fitted.joints3d(smplx_body), fitted.camera.K).numpy()
    err = np.linalg.norm(uv - kp.points, axis=-1)[kp.confidence > 0].mean()
    assert err < 10.0


def test_translation_solve_is_exact_without_noise():
    torch.manual_seed(0)
    joints = torch.randn(3, 12, 3) * 0.3
    t = torch.tensor([[0.1, -0.2, 3.0], [0.0, 0.0, 2.5], [-0.3, 0.1, 5.0]])
    K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
    cam = joints + t[:, None]
    uv = cam @ K.T
    uv = uv[..., :2] / uv[..., 2:]
    solved = _solve_translation(joints, uv, torch.ones(3, 12), K)
    assert torch.allclose(solved, t, atol=1e-3)


def test_align_turns_one_direction_into_another():
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.6, 0.0, 0.8]])
    R = rotation_between(a, b)
    assert torch.allclose((R @ a[..., None])[..., 0], b, atol=1e-5)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand(3, 3, 3), atol=1e-5)


def test_joint_limits_allow_natural_bends_only():
    knee = JOINT_INDEX["left_knee"]
    bent = torch.zeros(1, 1, 3)
    bent[0, 0, 0] = 1.2  # shin back: a normal knee bend
    backwards = -bent
    assert limit_penalty(bent, slice(knee, knee + 1)).item() == 0.0
    assert limit_penalty(backwards, slice(knee, knee + 1)).item() > 1.0
    elbow_l, elbow_r = JOINT_INDEX["left_elbow"], JOINT_INDEX["right_elbow"]
    flex = torch.tensor([[[0.0, -1.5, 0.0]]])
    assert limit_penalty(flex, slice(elbow_l, elbow_l + 1)).item() == 0.0
    assert limit_penalty(flex, slice(elbow_r, elbow_r + 1)).item() > 1.0  # mirrored for the right arm


def test_metrics():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(2, 22, 3))
    assert mpjpe(gt, gt) == 0.0
    c, s = np.cos(0.7), np.sin(0.7)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    moved = 1.3 * gt @ R.T + 5.0
    assert pa_mpjpe(moved, gt) < 1e-9 and mpjpe(moved, gt) > 0.1
