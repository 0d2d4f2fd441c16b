from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from studio.body import (
    BODY_MODELS,
    JOINT_INDEX,
    JOINT_NAMES,
    NUM_JOINTS,
    body_model_param_dims,
    canonical_pose,
    load_body_model,
    pose_points,
    rotation_between,
)
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


@pytest.fixture(params=["anny", "smplx", "smpl"])
def model(request, anny, smplx_body, smpl_body):
    return {"anny": anny, "smplx": smplx_body, "smpl": smpl_body}[request.param]


def test_zero_pose_is_a_t_pose_facing_plus_z(model):
    out = model({"transl": torch.zeros(1, 3)})
    lw, rw = joint(out, "left_wrist"), joint(out, "right_wrist")
    ls = joint(out, "left_shoulder")
    assert lw[0] > 0.4 and rw[0] < -0.4  # left side at +X
    assert abs(float(lw[1] - ls[1])) < 0.05  # arms horizontal
    head, ankle = joint(out, "head"), joint(out, "left_ankle")
    assert head[1] - ankle[1] > 1.0  # Y up
    if model.name != "smplx":  # the synthetic SMPL-X file's landmarks are not on a face
        assert joint(out, "nose")[2] > joint(out, "head")[2]  # facing +Z
        assert joint(out, "left_big_toe")[2] > joint(out, "left_heel")[2]
    if model.name == "anny":
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
    # Skinning bones: one name and parent per skin-weight column, parents listed first.
    B = model.skin_weights.shape[1]
    assert len(model.bone_names) == len(model.bone_parents) == B == len(set(model.bone_names))
    assert model.bone_parents[0] == -1 and all(0 <= p < b for b, p in enumerate(model.bone_parents) if b)


def test_anny_has_every_body_part_and_no_jaw(anny):
    assert set(anny.part_labels.unique().tolist()) == set(range(len(BODY_PART_NAMES)))
    assert not anny.joint_valid[JOINT_INDEX["jaw"]]
    assert int(anny.joint_valid.sum()) == NUM_JOINTS - 1


def test_rest_vertices_are_the_zero_pose_with_one_signature(model):
    torch.manual_seed(0)
    field = model.shape_field
    shape = {field: model.default_shape()[field] + 0.1 * torch.rand(1, model.shape_dims[field])}
    posed = {**shape, "body_pose": torch.randn(2, 63) * 0.3, "transl": torch.randn(2, 3)}
    rest = model.rest_vertices(posed)  # pose fields and transl are ignored
    assert rest.shape == (2, model.num_vertices, 3)
    assert torch.allclose(rest[1], model(shape).vertices[0], atol=1e-5)
    big = model.rest_vertices(shape, canonical="big")
    assert torch.allclose(big, model({**shape, **canonical_pose("big")}).vertices, atol=1e-5)
    with pytest.raises(StudioError, match="unknown canonical pose 'a'; choose one of t, big"):
        model.rest_vertices(shape, canonical="a")


def test_big_pose_spreads_the_legs_and_keeps_the_feet_flat(model):
    t = model(canonical_pose("t")).joints[0]
    big = model(canonical_pose("big")).joints[0]

    def turn(a, b, name_from, name_to):
        """Signed angle (degrees) about +Z from a's name_from -> name_to to b's, in the XY plane."""
        u = a[JOINT_INDEX[name_to]] - a[JOINT_INDEX[name_from]]
        v = b[JOINT_INDEX[name_to]] - b[JOINT_INDEX[name_from]]
        return math.degrees(math.atan2(float(u[0] * v[1] - u[1] * v[0]), float(u[0] * v[0] + u[1] * v[1])))

    for side, sign in (("left", 1.0), ("right", -1.0)):
        # The leg swings out by 45 degrees: the ankle moves away from the body's midline, not across it.
        assert turn(t, big, f"{side}_hip", f"{side}_ankle") == pytest.approx(45.0 * sign, abs=0.5)
        assert sign * float(big[JOINT_INDEX[f"{side}_ankle"], 0] - t[JOINT_INDEX[f"{side}_ankle"], 0]) > 0.2
        # The foot turns back 30 of those degrees: its sole tilts only 15 degrees from the ground.
        assert turn(t, big, f"{side}_ankle", f"{side}_foot") == pytest.approx(15.0 * sign, abs=0.5)
        assert big[JOINT_INDEX[f"{side}_foot"], 1] < big[JOINT_INDEX[f"{side}_ankle"], 1]
    upper = [JOINT_INDEX[n] for n in ("head", "left_wrist", "right_elbow", "spine3")]
    assert torch.allclose(big[upper], t[upper], atol=1e-5)


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


def test_parameter_validation_is_a_user_error(anny):
    with pytest.raises(StudioError, match="betas"):
        anny({"betas": torch.zeros(1, 10)})
    with pytest.raises(StudioError, match=r"body_pose.*\[T, 63\]"):
        anny({"body_pose": torch.zeros(2, 60)})
    with pytest.raises(StudioError, match="frames"):
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


# -- the table --------------------------------------------------------------------------------


def test_body_models_come_from_one_table(monkeypatch, smpl_dir):
    assert list(BODY_MODELS) == ["anny", "smplx", "smpl"]
    with pytest.raises(StudioError, match="unknown body model 'smplh'; choose one of anny, smplx, smpl"):
        load_body_model("smplh")
    with pytest.raises(StudioError, match="unknown body model"):
        body_model_param_dims("smplh")
    assert body_model_param_dims("smpl")["betas"] is None and "expression" not in body_model_param_dims("smpl")
    assert body_model_param_dims("anny")["phenotype"] == 6
    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    model = load_body_model("smpl")
    assert model.name == "smpl" and load_body_model("smpl", model_dir=smpl_dir) is model  # cached
    for spec in BODY_MODELS.values():
        assert spec.description and (spec.source.startswith("https://") or not spec.user_files)


def test_fit_attributes_replace_name_checks(anny, smplx_body, smpl_body):
    assert (anny.shape_field, anny.shape_bounds) == ("phenotype", (0.0, 1.0))
    for model in (smplx_body, smpl_body):
        assert (model.shape_field, model.shape_bounds) == ("betas", None)


def test_rotation_between():
    torch.manual_seed(0)
    a, b = torch.randn(50, 3), torch.randn(50, 3)
    R = rotation_between(a, b)
    assert torch.allclose((R @ a[..., None])[..., 0] / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True), atol=1e-5)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand(50, 3, 3), atol=1e-5)
    # The smallest rotation: its axis is perpendicular to both directions.
    axis = torch.linalg.cross(a, b)
    assert torch.allclose((R @ axis[..., None])[..., 0], axis, atol=1e-4)
    for d in torch.eye(3):  # opposite directions: a half turn
        assert torch.allclose(rotation_between(d, -d) @ d, -d, atol=1e-6)
    assert torch.equal(rotation_between(torch.zeros(3), torch.ones(3)), torch.eye(3))
    assert torch.allclose(rotation_between(torch.ones(3), torch.ones(3) * 2), torch.eye(3), atol=1e-6)


# -- smpl -------------------------------------------------------------------------------------


def test_smpl_joints_and_landmarks(smpl_body):
    from smplx.vertex_ids import vertex_ids
    from synthetic_smpl import smpl_tpose_joints

    assert smpl_body.num_vertices == 6890 and smpl_body.skin_weights.shape == (6890, 24)
    assert smpl_body.bone_names[22:] == ("left_hand", "right_hand") and smpl_body.bone_parents[22:] == (20, 21)
    valid = smpl_body.joint_valid
    assert valid[:22].all() and not valid[22:55].any() and valid[55:].all()
    out = smpl_body({"transl": torch.zeros(1, 3)})
    assert torch.allclose(out.joints[0, :22], torch.tensor(smpl_tpose_joints()[:22], dtype=torch.float32), atol=1e-5)
    assert torch.allclose(out.joints[0, JOINT_INDEX["nose"]], out.vertices[0, vertex_ids["smplh"]["nose"]])
    # Invalid joints sit at the nearest joint SMPL has: fingers at its hand joints, the jaw at the head.
    left_hand = torch.tensor(smpl_tpose_joints()[22], dtype=torch.float32)
    assert torch.allclose(out.joints[0, JOINT_INDEX["left_index2"]], left_hand, atol=1e-5)
    assert torch.equal(out.joints[0, JOINT_INDEX["jaw"]], out.joints[0, JOINT_INDEX["head"]])
    assert set(smpl_body.part_labels.unique().tolist()) == set(range(len(BODY_PART_NAMES)))


def test_smpl_takes_every_pose_field_and_ignores_what_it_lacks(smpl_body):
    base = {"body_pose": torch.randn(2, 63) * 0.2, "betas": torch.randn(1, 10)}
    out = smpl_body(base)
    ignored = {"left_hand_pose": torch.randn(2, 45), "right_hand_pose": torch.randn(2, 45), "jaw_pose": torch.randn(2, 3)}
    extra = smpl_body({**base, **ignored})
    assert torch.equal(out.vertices, extra.vertices)


@pytest.mark.parametrize("name", ["smplx", "smpl"])
def test_smpl_family_forward_is_the_smplx_packages(name, smplx_body, smpl_body):
    """studio's pass (pose correctives included) gives the smplx package's own vertices and joints."""
    model = smplx_body if name == "smplx" else smpl_body
    torch.manual_seed(1)
    T = 3
    p = {"global_orient": torch.randn(T, 3), "body_pose": torch.randn(T, 63) * 0.4, "transl": torch.randn(T, 3)}
    p = model.complete_params({**p, "betas": torch.randn(T, 10)})
    ours = model(p)
    if name == "smplx":
        zeros = torch.zeros(T, 3)
        theirs = model.layer(**{k: v for k, v in p.items()}, leye_pose=zeros, reye_pose=zeros)
    else:
        body_pose = torch.cat([p["body_pose"], torch.zeros(T, 6)], 1)  # SMPL's hand joints at zero
        theirs = model.layer(betas=p["betas"], global_orient=p["global_orient"], body_pose=body_pose, transl=p["transl"])
    assert torch.allclose(ours.vertices, theirs.vertices, atol=1e-5)
    assert torch.allclose(ours.joints[:, :22], theirs.joints[:, :22], atol=1e-5)
    # The synthetic files' pose correctives matter: skinning the T-pose without them misses by millimetres.
    skinned = pose_points(model.rest_vertices(p), model.skin_weights, ours.bone_transforms)
    assert (skinned - ours.vertices).abs().max() > 1e-3


def test_smpl_missing_file_names_it(tmp_path, monkeypatch):
    from studio.body.smpl_body import SMPLBody

    monkeypatch.delenv("STUDIO_SMPL_DIR", raising=False)
    with pytest.raises(MissingFileError, match=r"SMPL_NEUTRAL\.pkl not found \(get it from https://smpl\.is\.tue\.mpg\.de"):
        SMPLBody(tmp_path)
    with pytest.raises(MissingFileError, match="needs SMPL_NEUTRAL.pkl: pass --body-model-dir DIR or set STUDIO_SMPL_DIR") as e:
        SMPLBody(None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("layout", ["smpl/SMPL_NEUTRAL.npz", "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"])
def test_smpl_file_layouts(tmp_path, layout, smpl_body):
    from synthetic_smpl import write_synthetic_smpl

    from studio.body.smpl_body import SMPLBody

    written = write_synthetic_smpl(tmp_path / "w", fmt=layout.rsplit(".", 1)[1])
    target = tmp_path / "models" / layout
    target.parent.mkdir(parents=True)
    written.rename(target)
    model = SMPLBody(tmp_path / "models")
    assert model.model_file == target
    assert torch.allclose(model({"transl": torch.zeros(1, 3)}).vertices, smpl_body({"transl": torch.zeros(1, 3)}).vertices)


def test_smpl_reads_official_pickles_as_data_only(tmp_path, smpl_body):
    """An official-style pickle (chumpy arrays, a scipy sparse regressor) loads without chumpy; a pickle
    that would run code is refused with one line."""
    import pickle
    import sys
    import types

    from studio.body.smpl_body import SMPLBody

    with open(smpl_body.model_file, "rb") as f:
        data = pickle.load(f)
    package, chumpy = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    package.ch = chumpy

    class Ch:  # pickled like chumpy's: its __dict__, with the array in 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy.Ch = Ch
    sys.modules.update({"chumpy": package, "chumpy.ch": chumpy})
    try:
        for key in ("v_template", "shapedirs", "posedirs", "weights"):
            data[key] = Ch(data[key])
        (tmp_path / "official").mkdir()
        with open(tmp_path / "official" / "SMPL_NEUTRAL.pkl", "wb") as f:
            pickle.dump(data, f, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    model = SMPLBody(tmp_path / "official")
    assert torch.allclose(model({"transl": torch.zeros(1, 3)}).vertices, smpl_body({"transl": torch.zeros(1, 3)}).vertices)

    (tmp_path / "evil").mkdir()
    with open(tmp_path / "evil" / "SMPL_NEUTRAL.pkl", "wb") as f:
        f.write(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(StudioError, match="not a usable body model file.*os.system") as info:
        SMPLBody(tmp_path / "evil")
    assert "\n" not in str(info.value) and not (tmp_path / "pwned").exists()


def test_smpl_broken_files_are_one_clear_error(tmp_path):
    from synthetic_smpl import write_synthetic_smpl

    from studio.body.smpl_body import SMPLBody

    np.savez(tmp_path / "SMPL_NEUTRAL.npz", v_template=np.zeros((10, 3)))
    with pytest.raises(StudioError, match="not a usable SMPL model file"):
        SMPLBody(tmp_path)
    path = write_synthetic_smpl(tmp_path / "wrong", fmt="npz")
    arrays = dict(np.load(path))
    arrays["posedirs"] = arrays["posedirs"][..., :100]
    np.savez(path, **arrays)
    with pytest.raises(StudioError, match="'posedirs' has shape .*SMPL needs"):
        SMPLBody(tmp_path / "wrong")
