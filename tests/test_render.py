from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.body import BODY_PART_COLORS, JOINT_INDEX
from studio.condition import Camera, HumanCondition, project, world_to_camera
from studio.errors import StudioError
from studio.render import MAP_NAMES, parse_maps, vertex_normals
from studio.render.gl import MeshRasterizer


def front_condition(T=2, size=(256, 192), **body):
    body = {"transl": torch.zeros(T, 3), **body}
    camera = Camera.look_at((0.0, 0.0, 2.8), (0.0, -0.05, 0.0), image_size=size, num_frames=T)
    return HumanCondition("anny", body, camera, fps=30)


@pytest.fixture(scope="module")
def front_maps(anny):
    return front_condition().render(body_model=anny)


def test_maps_shapes_and_dtypes(front_maps):
    assert set(front_maps) == set(MAP_NAMES)
    assert front_maps["depth"].shape == (2, 256, 192) and front_maps["mask"].shape == (2, 256, 192)
    for name in ("normal", "semantic", "skeleton"):
        assert front_maps[name].shape == (2, 256, 192, 3)
    assert all(m.dtype == np.uint8 for m in front_maps.values())


def test_mask_depth_and_semantic_agree_on_the_silhouette(front_maps):
    mask = front_maps["mask"][0] > 0
    assert set(np.unique(front_maps["mask"])) == {0, 255}
    assert 0.05 < mask.mean() < 0.5
    assert np.array_equal(front_maps["depth"][0] > 0, mask)
    assert np.array_equal(front_maps["semantic"][0].any(-1), mask)
    assert front_maps["depth"][0][mask].min() >= 32
    palette = {tuple(c) for c in BODY_PART_COLORS}
    colours = {tuple(c) for c in front_maps["semantic"][0][mask]}
    assert colours <= palette and len(colours) >= 15


def test_silhouette_matches_projected_vertices(anny, front_maps):
    cond = front_condition()
    verts = world_to_camera(cond.posed(anny).vertices, cond.camera.extrinsics)
    uv = project(verts, cond.camera.K)[0].numpy()
    ys, xs = np.nonzero(front_maps["mask"][0])
    assert abs(xs.min() - uv[:, 0].min()) < 2 and abs(xs.max() - uv[:, 0].max()) < 2
    assert abs(ys.min() - uv[:, 1].min()) < 2 and abs(ys.max() - uv[:, 1].max()) < 2


def test_front_normals_face_the_camera_and_sides_point_sideways(front_maps):
    normal = front_maps["normal"][0].astype(float) / 255 * 2 - 1  # OpenGL camera axes
    mask = front_maps["mask"][0] > 0
    H, W = mask.shape
    chest = normal[int(H * 0.33), W // 2]
    assert chest[2] > 0.8
    row = int(H * 0.45)
    xs = np.nonzero(mask[row])[0]
    left_edge, right_edge = normal[row, xs.min()], normal[row, xs.max()]
    assert left_edge[0] < -0.3 and right_edge[0] > 0.3  # x right


def test_depth_is_bright_where_near(anny):
    # Left arm reaching towards the camera: the hand is nearer than the torso.
    pose = torch.zeros(1, 21, 3)
    pose[0, JOINT_INDEX["left_shoulder"] - 1] = torch.tensor([0.0, -1.5, 0.0])
    cond = front_condition(T=1, body_pose=pose.reshape(1, 63))
    maps = cond.render(["depth", "depth_metric"], body_model=anny)
    depth, metric = maps["depth"][0], maps["depth_metric"][0]
    j = world_to_camera(cond.posed(anny).joints, cond.camera.extrinsics)
    uv = project(j, cond.camera.K)[0].numpy().round().astype(int)
    hand, chest = uv[JOINT_INDEX["left_wrist"]], uv[JOINT_INDEX["spine3"]]
    assert depth[hand[1], hand[0]] > depth[chest[1], chest[0]] + 50
    assert metric[hand[1], hand[0]] < metric[chest[1], chest[0]] - 0.3
    assert metric[0, 0] == 0 and depth.max() >= 250


def test_skeleton_draws_openpose_colours_at_the_joints(anny, front_maps):
    sk = front_maps["skeleton"][0]
    cond = front_condition()
    uv = project(world_to_camera(cond.posed(anny).joints, cond.camera.extrinsics), cond.camera.K)[0].numpy()
    nose = uv[JOINT_INDEX["nose"]].round().astype(int)
    assert tuple(sk[nose[1], nose[0]]) == (255, 0, 0)  # OpenPose keypoint 0 is red
    assert (sk.any(-1)).mean() < 0.1
    hand = uv[JOINT_INDEX["left_middle2"]].round().astype(int)
    assert sk[hand[1] - 2 : hand[1] + 3, hand[0] - 2 : hand[0] + 3].any()  # hands are drawn


def test_streaming_chunks_match_one_batch(anny, walk):
    clip = walk[:7]
    whole = clip.render(size=128, body_model=anny, chunk_size=32)
    chunks = [{k: v.copy() for k, v in c.items()} for c in clip.iter_render(size=128, body_model=anny, chunk_size=3)]
    assert [len(c["depth"]) for c in chunks] == [3, 3, 1]
    for name in MAP_NAMES:
        assert np.array_equal(np.concatenate([c[name] for c in chunks]), whole[name])
    assert not np.array_equal(whole["mask"][0], whole["mask"][6])  # the body moves


def test_vertex_normals_of_a_cube_point_outwards():
    v = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    faces = torch.tensor(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    )  # fmt: skip
    n = vertex_normals(v[None], faces)[0]
    assert torch.allclose(n.norm(dim=1), torch.ones(8))
    assert ((n * v).sum(1) > 0.5).all()  # outwards
    # Corners 0 and 7 touch two triangles of each of their three faces: the normal is the diagonal.
    assert torch.allclose(n[[0, 7]], v[[0, 7]] / 3**0.5, atol=1e-5)


def test_rasterizer_puts_a_triangle_where_the_pinhole_model_says():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    verts = np.array([[0.0, 0.0, 2.0], [0.4, 0.0, 2.0], [0.0, 0.3, 2.0]])  # pixels (32,24) (52,24) (32,39)
    normals = np.tile([0.0, 0.0, -1.0], (3, 1))
    raster = MeshRasterizer(np.array([[0, 1, 2]]), np.array([[255, 0, 0]] * 3, dtype=np.uint8), width=64, height=48)
    normal, color = np.zeros((48, 64, 4), np.uint8), np.zeros((48, 64, 4), np.uint8)
    depth = np.zeros((48, 64), np.float32)
    raster.render_into(verts, normals, K, normal_out=normal, color_out=color, depth_out=depth)
    raster.release()
    ys, xs = np.nonzero(normal[..., 3])
    assert (xs.min(), ys.min()) == (32, 24) and abs(xs.max() - 51) <= 1 and abs(ys.max() - 38) <= 1
    assert np.allclose(depth[ys, xs], 2.0)
    assert tuple(color[26, 34, :3]) == (255, 0, 0)
    assert tuple(normal[26, 34, :3]) == (128, 128, 255)  # facing the camera


def test_parse_maps():
    assert parse_maps("depth, mask") == ("depth", "mask")
    with pytest.raises(StudioError, match="unknown map"):
        parse_maps("depth,colour")


@pytest.mark.slow
def test_a_long_motion_streams_in_bounded_memory(anny, walk):
    import tracemalloc

    long = walk[torch.arange(1000) % walk.num_frames]
    tracemalloc.start()
    frames = 0
    for chunk in long.iter_render(size=128, body_model=anny, chunk_size=32):
        frames += len(chunk["depth"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert frames == 1000
    all_at_once = 1000 * 128 * 96 * (1 + 3 + 3 + 3 + 1)  # 135 MB of maps
    assert peak < all_at_once / 5
