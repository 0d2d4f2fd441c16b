from __future__ import annotations

import math

import pytest
import torch

from studio.body import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, linear_blend_skinning
from studio.body.joints import BODY_PART_NAMES, NUM_SMPLX_JOINTS, SMPLX_JOINT_NAMES
from studio.errors import MissingFileError, StudioError


def joint(out, name, t=0):
    return out.joints[t, JOINT_INDEX[name]]


def body_pose_with(**rotvecs) -> torch.Tensor:
    """[1, 63] body_pose with some joints set by name."""
    pose = torch.zeros(1, 21, 3)
    for name, v in rotvecs.items():
        pose[0, JOINT_INDEX[name] - 1] = torch.tensor(v, dtype=torch.float32)
    return pose.reshape(1, 63)


def test_joint_set_is_smplx_then_landmarks():
    assert JOINT_NAMES[:NUM_SMPLX_JOINTS] == SMPLX_JOINT_NAMES
    assert NUM_SMPLX_JOINTS == 55 and NUM_JOINTS == 76
    assert JOINT_NAMES[0] == "pelvis" and JOINT_NAMES[21] == "right_wrist"


@pytest.fixture(params=["anny", "smplx"])
def model(request, anny, smplx_body):
    return anny if request.param == "anny" else smplx_body


def test_zero_pose_is_a_t_pose_facing_plus_z(model):
    out = model({"transl": torch.zeros(1, 3)})
    lw, rw = joint(out, "left_wrist"), joint(out, "right_wrist")
    ls = joint(out, "left_shoulder")
    assert lw[0] > 0.4 and rw[0] < -0.4  # left side at +X
    assert abs(float(lw[1] - ls[1])) < 0.05  # arms horizontal
    head, ankle = joint(out, "head"), joint(out, "left_ankle")
    assert head[1] - ankle[1] > 1.0  # Y up
    if model.name == "anny":
        assert joint(out, "nose")[2] > joint(out, "head")[2]  # facing +Z
        height = out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min()
        assert 1.4 < float(height) < 2.0


def test_output_shapes_and_parts(model):
    T = 3
    out = model({"body_pose": torch.randn(T, 63) * 0.2})
    V = model.num_vertices
    assert out.vertices.shape == (T, V, 3)
    assert out.joints.shape == (T, NUM_JOINTS, 3)
    assert out.bone_transforms.shape[:2] == (T, model.skin_weights.shape[1])
    assert model.part_labels.shape == (V,)
    assert int(model.part_labels.max()) < len(BODY_PART_NAMES)
    assert torch.allclose(model.skin_weights.sum(1), torch.ones(V), atol=1e-4)


def test_anny_has_every_body_part_and_no_jaw(anny):
    assert set(anny.part_labels.unique().tolist()) == set(range(len(BODY_PART_NAMES)))
    assert not anny.joint_valid[JOINT_INDEX["jaw"]]
    assert int(anny.joint_valid.sum()) == NUM_JOINTS - 1


def test_bone_transforms_repose_rest_vertices(anny):
    torch.manual_seed(0)
    params = {
        "body_pose": torch.randn(2, 63) * 0.3,
        "global_orient": torch.randn(2, 3),
        "transl": torch.randn(2, 3),
    }
    out = anny(params)
    rest = anny.rest_vertices(torch.full((1, 6), 0.5))
    reposed = linear_blend_skinning(rest, anny.skin_weights, out.bone_transforms)
    assert torch.allclose(reposed, out.vertices, atol=1e-4)


def test_smplx_bone_transforms_repose_rest_vertices(smplx_body):
    params = {"body_pose": torch.randn(2, 63) * 0.3, "transl": torch.randn(2, 3), "betas": torch.randn(2, 10)}
    out = smplx_body(params)
    rest = smplx_body.rest_vertices(params["betas"])
    reposed = linear_blend_skinning(rest, smplx_body.skin_weights, out.bone_transforms)
    assert torch.allclose(reposed, out.vertices, atol=1e-4)  # the synthetic file has no pose correctives


def test_elbow_rotation_moves_only_the_forearm_rigidly(model):
    rest = model({"transl": torch.zeros(1, 3)})
    bent = model({"body_pose": body_pose_with(left_elbow=(0.0, -math.pi / 2, 0.0))})
    # The wrist swings from +X to +Z (forward) around the elbow; the forearm keeps its length.
    e, w0, w1 = joint(rest, "left_elbow"), joint(rest, "left_wrist"), joint(bent, "left_wrist")
    assert torch.allclose(joint(bent, "left_elbow"), e, atol=1e-5)
    assert torch.isclose((w1 - e).norm(), (w0 - e).norm(), atol=1e-4)
    assert (w1 - e)[2] > 0.9 * (w0 - e).norm()
    assert torch.allclose(joint(bent, "right_wrist"), joint(rest, "right_wrist"), atol=1e-5)


def test_global_orient_turns_about_the_pelvis_and_transl_moves_it(model):
    rest = model({"transl": torch.zeros(1, 3)})
    moved = model({"global_orient": torch.tensor([[0.0, math.pi / 2, 0.0]]), "transl": torch.tensor([[1.0, 2.0, 3.0]])})
    assert torch.allclose(joint(moved, "pelvis"), joint(rest, "pelvis") + torch.tensor([1.0, 2.0, 3.0]), atol=1e-4)
    # A quarter turn about +Y takes the left hand (+X) to -Z.
    offset = joint(moved, "left_wrist") - joint(moved, "pelvis")
    assert offset[2] < -0.4 and abs(float(offset[0])) < 0.1


def test_anny_phenotype_changes_height(anny):
    short = anny({"phenotype": torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.0, 0.5]])})
    tall = anny({"phenotype": torch.tensor([[0.5, 0.5, 0.5, 0.5, 1.0, 0.5]])})

    def height(out):
        return float(out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min())

    assert height(tall) > height(short) + 0.1


def test_parameter_validation(anny):
    with pytest.raises(ValueError, match="betas"):
        anny({"betas": torch.zeros(1, 10)})
    with pytest.raises(ValueError, match=r"body_pose.*\[T, 63\]"):
        anny({"body_pose": torch.zeros(2, 60)})
    with pytest.raises(ValueError, match="frames"):
        anny({"body_pose": torch.zeros(2, 63), "transl": torch.zeros(3, 3)})


def test_smplx_landmarks_read_the_smplx_vertex_ids(smplx_body):
    from smplx.vertex_ids import vertex_ids

    out = smplx_body({"transl": torch.zeros(1, 3)})
    assert torch.allclose(out.joints[0, JOINT_INDEX["nose"]], out.vertices[0, vertex_ids["smplx"]["nose"]])
    # Joints 0..54 come from the regressor: on the synthetic file, the T-pose joint positions.
    from synthetic_smplx import tpose_joints

    assert torch.allclose(out.joints[0, :55], torch.tensor(tpose_joints(), dtype=torch.float32), atol=1e-5)


def test_smplx_missing_file_names_it(tmp_path, monkeypatch):
    from studio.body.smplx_body import SMPLXBody

    monkeypatch.delenv("STUDIO_SMPLX_DIR", raising=False)
    with pytest.raises(MissingFileError, match="SMPLX_NEUTRAL.npz.*smpl-x.is.tue.mpg.de"):
        SMPLXBody(tmp_path)
    with pytest.raises(MissingFileError, match="STUDIO_SMPLX_DIR"):
        SMPLXBody(None)


def test_smplx_broken_file_is_one_clear_error(tmp_path):
    import numpy as np

    from studio.body.smplx_body import SMPLXBody

    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", v_template=np.zeros((10, 3)))
    with pytest.raises(StudioError, match="not a usable SMPL-X model file"):
        SMPLXBody(tmp_path)


def test_anny_joints_only_path_matches_the_full_forward(anny):
    torch.manual_seed(3)
    T = 5
    params = {
        "global_orient": torch.randn(T, 3),
        "body_pose": torch.randn(T, 63) * 0.4,
        "left_hand_pose": torch.randn(T, 45) * 0.3,
        "right_hand_pose": torch.randn(T, 45) * 0.3,
        "transl": torch.randn(T, 3),
        "phenotype": torch.rand(T, 6),
    }
    full = anny(params).joints
    assert torch.allclose(full, anny.joints(params), atol=1e-5)  # a shape per frame
    one_shape = {**params, "phenotype": params["phenotype"][:1]}
    assert torch.allclose(anny(one_shape).joints, anny.joints(one_shape), atol=1e-5)  # the compact chain
    # Gradients flow to pose and shape through the fast path.
    for source in (params, one_shape):
        p = {k: v.clone().requires_grad_() for k, v in source.items()}
        anny.joints(p)[:, :, 1].sum().backward()
        assert p["body_pose"].grad.abs().sum() > 0 and p["phenotype"].grad.abs().sum() > 0
