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


# -- the learned pose prior -----------------------------------------------------------------------
def test_gmm_recovers_a_known_mixture():
    from studio.fit.prior import fit_gmm

    rng = np.random.default_rng(0)
    a = rng.normal([0.0, 0.0], 0.1, (400, 2))
    b = rng.normal([1.0, -1.0], [0.3, 0.05], (200, 2))
    gmm = fit_gmm(np.concatenate([a, b]), 2, reg=1e-6)
    order = np.argsort(gmm["means"][:, 0])
    assert np.allclose(gmm["means"][order], [[0.0, 0.0], [1.0, -1.0]], atol=0.05)
    assert np.allclose(gmm["weights"][order], [2 / 3, 1 / 3], atol=0.03)
    assert np.allclose(np.sqrt(np.diagonal(gmm["covariances"][order[1]])), [0.3, 0.05], rtol=0.15)


def test_pose_prior_prefers_mocap_poses_and_is_symmetric(anny, run_motion):
    from studio.fit.prior import load_pose_prior, mirror_rotvecs

    prior = load_pose_prior()
    natural = run_motion.body["body_pose"][10:20]
    odd = natural.clone()
    knee = 3 * (JOINT_INDEX["left_knee"] - 1)
    odd[:, knee] = -1.2  # the knee bent forwards
    assert (prior.penalty(odd) > prior.penalty(natural) + 5).all()
    # Mirroring the body (left <-> right, rotations mirrored) costs the same.
    rot = natural.view(-1, 21, 3)
    from studio.body.joints import SMPLX_JOINT_NAMES

    swap = [SMPLX_JOINT_NAMES.index(n.replace("left_", "#").replace("right_", "left_").replace("#", "right_")) - 1 for n in SMPLX_JOINT_NAMES[1:22]]
    mirrored = mirror_rotvecs(rot[:, swap]).reshape(-1, 63)
    assert torch.allclose(prior.penalty(mirrored), prior.penalty(natural), rtol=1e-4, atol=1e-3)
    assert (prior.penalty(natural) >= 0).all()


def test_a_bad_pose_prior_file_is_one_line(tmp_path):
    from studio.errors import StudioError
    from studio.fit.prior import PosePrior

    with pytest.raises(StudioError, match="no such pose-prior file"):
        PosePrior(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(StudioError, match="not a studio pose-prior file"):
        PosePrior(tmp_path / "other.npz")


@pytest.mark.slow
def test_build_pose_prior_script(tmp_path):
    import subprocess
    import sys

    from studio.fit.prior import PosePrior

    out = tmp_path / "prior.npz"
    r = subprocess.run([sys.executable, str(ASSETS.parent / "scripts" / "build_pose_prior.py"), "--only", str(ASSETS / "media" / "cmu_02_03_run.bvh"), "-o", str(out), "--components", "3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    prior = PosePrior(out)
    assert prior.sources and "cmu_02_03_run.bvh" in prior.sources[0]
    assert prior.penalty(torch.zeros(2, 63)).shape == (2,)


# -- silhouette and the estimator's evidence --------------------------------------------------------
def test_silhouette_pulls_points_onto_the_mask():
    from studio.fit.silhouette import SilhouetteTerm

    mask = np.zeros((200, 300), np.uint8)
    mask[50:150, 100:200] = 255
    term = SilhouetteTerm(mask, work_side=200)
    grid = torch.stack(torch.meshgrid(torch.linspace(100, 199, 60), torch.linspace(50, 149, 60), indexing="xy"), -1).reshape(1, -1, 2)
    assert float(term(grid)) < 0.01  # on the mask and covering its outline
    points = (grid + torch.tensor([60.0, 0.0])).requires_grad_()  # slid right, off the mask
    before = float(term(points).detach())
    optimizer = torch.optim.Adam([points], lr=2.0)
    for _ in range(60):
        optimizer.zero_grad()
        term(points).sum().backward()
        optimizer.step()
    assert float(term(points).detach()) < 0.3 * before
    # An outline on the image's border (the frame cut the person) asks for nothing.
    cut = np.zeros((200, 300), np.uint8)
    cut[50:150, 0:100] = 255
    outline = SilhouetteTerm(cut, work_side=200).outline
    assert (outline[:, 0] >= 3).all() and (outline[:, 1] < 55).any()  # the top edge stays, the border column goes


def test_world_weights_distrust_flattened_limbs_and_depth_order_hinges(anny):
    from studio.fit.evidence import SEGMENTS, depth_order, world_weights
    from studio.pose import Keypoints

    fitter = BodyFitter(anny)
    rest = fitter._rest.numpy() * [1, -1, -1]  # camera axes (y down), the T-pose facing the camera
    kp = Keypoints.empty(1, (800, 800))
    kp.world[0] = rest - rest[[JOINT_INDEX["left_hip"], JOINT_INDEX["right_hip"]]].mean(0)
    kp.points[0] = kp.world[0, :, :2] * 300 + 400
    kp.confidence[0, :22] = 0.95
    kp.world_confidence[0, :22] = 0.95
    wrist, elbow = JOINT_INDEX["left_wrist"], JOINT_INDEX["left_elbow"]
    kp.world[0, wrist] = kp.world[0, elbow] + 0.4 * (kp.world[0, wrist] - kp.world[0, elbow])  # the forearm flattened
    weights = world_weights(kp, bone_lengths=fitter._bones)
    assert weights[0, wrist] < 0.2 and weights[0, elbow] > 0.8
    # Ordinal depth: the right wrist over the torso and seen is in front of it.
    kp.points[0, JOINT_INDEX["right_wrist"]] = kp.points[0, [JOINT_INDEX[n] for n in ("left_shoulder", "right_hip")]].mean(0)
    kp.confidence[0, JOINT_INDEX["right_wrist"]] = 0.95
    order = depth_order(kp)
    assert len(order) == 1 and int(order.front[0]) == JOINT_INDEX["right_wrist"] and int(order.behind[0]) == -1
    joints = torch.from_numpy(kp.world).float()
    joints[0, JOINT_INDEX["right_wrist"], 2] = 0.3  # behind the torso: violated
    assert float(order.penalty(joints)) > 0
    joints[0, JOINT_INDEX["right_wrist"], 2] = -0.3  # in front: satisfied
    assert float(order.penalty(joints)) == 0.0
    assert len(SEGMENTS) == 8
