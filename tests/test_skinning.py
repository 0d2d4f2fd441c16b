"""Skinning arbitrary points with every body model: canonical <-> posed, weights for any point."""

from __future__ import annotations

import pytest
import torch

from studio.body import body_skinning, canonical_pose, point_skin_weights, pose_points, unpose_points
from studio.body.skinning import closest_points_on_triangles, closest_surface_points
from studio.errors import StudioError



@pytest.fixture(params=["anny", "smplx", "smpl"])
def model(request, anny, smplx_body, smpl_body):
    return {"anny": anny, "smplx": smplx_body, "smpl": smpl_body}[request.param]


def random_params(model, T: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    field = model.shape_field
    shape = model.default_shape()[field] + 0.2 * torch.rand(1, model.shape_dims[field], generator=g)
    return {
        "global_orient": torch.randn(T, 3, generator=g),
        "body_pose": torch.randn(T, 63, generator=g) * 0.3,
        "left_hand_pose": torch.randn(T, 45, generator=g) * 0.2,
        "transl": torch.randn(T, 3, generator=g),
        field: shape.expand(T, -1),
    }


def near_the_body(vertices: torch.Tensor, n: int, *, seed: int = 0) -> torch.Tensor:
    """n random points [n, 3] within a few centimetres of the surface."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vertices.shape[0], (n,), generator=g)
    return vertices[ids] + 0.02 * torch.randn(n, 3, generator=g)


@pytest.mark.parametrize("canonical", ["t", "big"])
def test_reposing_the_canonical_vertices_gives_the_forward_pass(model, canonical):
    params = random_params(model)
    skin = body_skinning(model, params, canonical=canonical)
    T, V, B = 3, model.num_vertices, len(model.bone_names)
    assert skin.vertices.shape == (V, 3) and skin.transforms.shape == (T, B, 4, 4) and skin.offsets.shape == (T, V, 3)
    assert skin.bone_names == model.bone_names and skin.bone_parents == model.bone_parents
    assert torch.allclose(skin.vertices, model.rest_vertices(params, canonical=canonical)[0], atol=1e-5)
    forward = model(params).vertices
    assert torch.allclose(pose_points(skin.vertices, skin.weights, skin.transforms, offsets=skin.offsets), forward, atol=1e-5)
    assert torch.allclose(skin.posed_vertices(), forward, atol=1e-5)
    # The transforms do the work; the offsets are pose correctives, small.
    assert skin.offsets.norm(dim=-1).max() < 0.08
    assert skin.offsets.norm(dim=-1).mean() < 0.01


def test_t_pose_transforms_are_the_body_models_bone_transforms(model):
    params = random_params(model)
    skin = body_skinning(model, params)
    assert torch.allclose(skin.transforms, model(params).bone_transforms, atol=1e-5)
    # At the canonical pose itself nothing moves and nothing needs correcting.
    for canonical in ("t", "big"):
        at_rest = {**canonical_pose(canonical), model.shape_field: params[model.shape_field][:1]}
        rest = body_skinning(model, at_rest, canonical=canonical)
        assert torch.allclose(rest.transforms, torch.eye(4).expand_as(rest.transforms), atol=1e-5)
        assert rest.offsets.abs().max() < 1e-5


@pytest.mark.parametrize("name", ["smplx", "smpl"])
def test_offsets_are_the_smpl_pose_blend_shapes(name, smplx_body, smpl_body):
    """For the T-pose canonical space, the offsets are exactly SMPL's pose correctives (posedirs)."""
    from smplx.lbs import batch_rodrigues

    model = smplx_body if name == "smplx" else smpl_body
    params = random_params(model)
    skin = body_skinning(model, params)
    p = model.complete_params(params)
    rotations = batch_rodrigues(torch.cat([p["global_orient"], p["body_pose"]], 1).reshape(-1, 3)).reshape(3, 22, 3, 3)
    J = len(model.bone_names)
    full = torch.eye(3).repeat(3, J, 1, 1)
    full[:, :22] = rotations
    if name == "smplx":
        full[:, 25:40] = batch_rodrigues(p["left_hand_pose"].reshape(-1, 3)).reshape(3, 15, 3, 3)
    feature = (full[:, 1:] - torch.eye(3)).reshape(3, -1)
    posedirs = (feature @ model.layer.posedirs).reshape(3, -1, 3)
    assert posedirs.abs().max() > 1e-3  # the synthetic files have pose correctives
    assert torch.allclose(skin.offsets, posedirs, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "barycentric"])
def test_points_round_trip_canonical_posed_canonical(model, mode):
    params = random_params(model)
    skin = body_skinning(model, params, canonical="big")
    points = near_the_body(skin.vertices, 500)
    weights = point_skin_weights(points, skin.vertices, skin.faces, skin.weights, mode=mode)
    assert weights.shape == (500, len(model.bone_names))
    assert torch.allclose(weights.sum(1), torch.ones(500), atol=1e-5)
    posed = pose_points(points, weights, skin.transforms)
    assert posed.shape == (3, 500, 3)
    assert torch.allclose(unpose_points(posed, weights, skin.transforms), points.expand(3, -1, -1), atol=1e-5)
    # With per-point pose correctives, too.
    offsets = skin.point_offsets(points, mode=mode)
    assert offsets.shape == (3, 500, 3)
    posed = pose_points(points, weights, skin.transforms, offsets=offsets)
    assert torch.allclose(unpose_points(posed, weights, skin.transforms, offsets=offsets), points.expand(3, -1, -1), atol=1e-5)


def test_surface_weights_at_a_vertex_are_its_own(model):
    skin = body_skinning(model, random_params(model))
    used = skin.faces.unique()
    ids = used[torch.randperm(used.numel(), generator=torch.Generator().manual_seed(0))[:300]]
    # Vertices on the surface with no twin (the synthetic files' tubes meet in coincident rings).
    distances = torch.cdist(skin.vertices[ids], skin.vertices, compute_mode="donot_use_mm_for_euclid_dist")
    apart = distances.topk(2, largest=False).values[:, 1] > 1e-4
    ids = ids[apart]
    assert ids.numel() > 200
    for mode in ("nearest", "barycentric"):
        weights = skin.point_weights(skin.vertices[ids], mode=mode)
        assert torch.allclose(weights, skin.weights[ids], atol=1e-6)
        assert torch.allclose(skin.point_offsets(skin.vertices[ids], mode=mode), skin.offsets[:, ids], atol=1e-6)


def test_closest_surface_points_are_exact(anny):
    vertices = anny.rest_vertices({"transl": torch.zeros(1, 3)})[0]
    g = torch.Generator().manual_seed(1)
    points = torch.cat([near_the_body(vertices, 120), 1.5 * torch.randn(40, 3, generator=g)])  # near and far
    face, barycentric, distance = closest_surface_points(points, vertices, anny.faces)
    triangles = vertices[anny.faces]
    _, all_distances = closest_points_on_triangles(points[:, None], triangles[None])  # brute force [N, F]
    assert torch.allclose(distance, all_distances.min(1).values, atol=1e-6)
    closest = (barycentric[..., None] * triangles[face]).sum(1)
    assert torch.allclose((points - closest).norm(dim=-1), distance, atol=1e-6)
    assert (barycentric >= -1e-6).all() and torch.allclose(barycentric.sum(1), torch.ones(160), atol=1e-6)


def test_closest_point_on_a_triangle_in_every_region():
    triangle = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    cases = {  # point -> barycentric of its closest point
        (-1.0, -1.0, 0.5): (1.0, 0.0, 0.0),
        (2.0, -0.5, 0.0): (0.0, 1.0, 0.0),
        (-0.5, 2.0, -1.0): (0.0, 0.0, 1.0),
        (0.5, -1.0, 0.0): (0.5, 0.5, 0.0),
        (-1.0, 0.25, 0.0): (0.75, 0.0, 0.25),
        (1.0, 1.0, 0.0): (0.0, 0.5, 0.5),
        (0.25, 0.25, 3.0): (0.5, 0.25, 0.25),
    }
    points = torch.tensor(list(cases))
    barycentric, distance = closest_points_on_triangles(points, triangle.expand(len(cases), 3, 3))
    assert torch.allclose(barycentric, torch.tensor(list(cases.values())), atol=1e-6)
    assert distance[-1] == pytest.approx(3.0)


def test_skinning_needs_one_shape_and_known_names(anny):
    with pytest.raises(StudioError, match="one body shape for all frames"):
        body_skinning(anny, {"phenotype": torch.rand(2, 6)})
    with pytest.raises(StudioError, match="unknown canonical pose 'a'; choose one of t, big"):
        body_skinning(anny, {"transl": torch.zeros(1, 3)}, canonical="a")
    with pytest.raises(StudioError, match="unknown skin-weight mode"):
        point_skin_weights(torch.zeros(1, 3), torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), torch.ones(3, 1), mode="idw")


def test_many_points_in_bounded_chunks(anny, monkeypatch):
    """Weights for many points are computed chunk by chunk, with the same result."""
    import studio.body.skinning as skinning

    skin = body_skinning(anny, {"transl": torch.zeros(1, 3)})
    points = near_the_body(skin.vertices, 600, seed=2)
    whole = skin.point_weights(points, mode="barycentric")
    monkeypatch.setattr(skinning, "_CHUNK_ELEMENTS", 1 << 20)  # about 40 points per chunk
    assert torch.allclose(skin.point_weights(points, mode="barycentric"), whole)
    assert torch.equal(skin.point_weights(points), skinning.point_skin_weights(points, skin.vertices, skin.faces, skin.weights))
    posed = pose_points(points, whole, skin.transforms.expand(40, -1, -1, -1))  # frames in chunks, too
    assert torch.allclose(posed[-1], points, atol=1e-5)
