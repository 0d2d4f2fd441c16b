"""studio.nerf: safe loading, sparse convolution, ray sampling, nearest-vertex queries, compositing
against a brute-force quadrature, body warps, reference crops, body conversion and training data."""

from __future__ import annotations

import collections
import json
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from studio.camera import Camera
from studio.condition import HumanCondition
from studio.errors import StudioError
from studio.nerf import (
    PositionalEncoding,
    ResNet18,
    SparseConv3d,
    SparseConvNet,
    StandIn,
    VertexGrid,
    blend,
    body_box,
    body_params,
    canonical_body,
    check_state,
    composite,
    composite_reference,
    convert_condition,
    knn,
    load_npy_object,
    load_pickle,
    make_sparse_volume,
    module_state,
    official_intrinsics,
    pixel_rays,
    pose,
    posed_body,
    psnr,
    ray_box,
    read_torch_zip,
    reference_view,
    sample_depths,
    sample_sparse,
    spconv_available,
    ssim,
    unpose,
    use_batch_statistics,
    warp,
    warp_rotations,
)

# --- safe loading ------------------------------------------------------------------------------------


def _fake_module(name: str) -> types.ModuleType:
    """A module that pickle can name classes in while a test writes a file (what official code would be)."""
    if name not in sys.modules:
        module = types.ModuleType(name)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_fake_module(parent), child, module)
    return sys.modules[name]


def _fake_class(module: str, name: str, base: type = object) -> type:
    cls = type(name, (base,), {"__module__": module, "__qualname__": name})
    setattr(_fake_module(module), name, cls)
    return cls


class Harmful:
    """Unpickling this would run a shell command that creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def stand_still(camera: Camera) -> HumanCondition:
    """The (synthetic) SMPL body in its rest pose, seen by ``camera`` (shared by the NeRF pipelines' tests)."""
    return HumanCondition("smpl", {"betas": torch.zeros(1, 10), "global_orient": torch.zeros(1, 3), "body_pose": torch.zeros(1, 63), "transl": torch.zeros(1, 3)}, camera)


def overfit_losses(model: torch.nn.Module, sample, *, steps: int = 10, lr: float = 2e-3) -> list[float]:
    """A training model's loss over ``steps`` Adam steps on one sample with the same rays every step."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        terms = model(sample, np.random.default_rng(1))
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(float(terms["loss"].detach()))
    return losses


def novel_view_command(capsys, photos: list[str], out, *, method: str, weights) -> tuple[int, str]:
    """`studio novel-view` run in-process as a user types it (2 orbit frames at 64 px, 64 px crops,
    on the CPU): (exit status, what it printed on stderr)."""
    from studio.cli import run

    capsys.readouterr()
    args = ["--orbit", "2", "--size", "64", "--set", "reference_size=64", "--set", "device=cpu"]
    code = run(["novel-view", *photos, "-o", str(out), "--method", method, "--weights", str(weights), *args])
    return code, capsys.readouterr().err


def tiny_dataset(folder, source, body_model, motion, layout: str):
    """A tiny generated multi-view dataset (one subject, one pose, 4 + 1 cameras at 40 px)."""
    from studio.nerf import MultiViewConfig, generate_multiview_data

    generate_multiview_data(folder, [source], [motion[:4]], body_model=body_model, layout=layout, config=MultiViewConfig(size=40, views=4, heldout_views=1, poses=1))
    return folder


def test_restricted_unpickler_keeps_tensors_and_runs_nothing(tmp_path):
    Thing = _fake_class("training.studio_test_fakes", "Thing")
    Mapping = _fake_class("dnnlib.studio_test_fakes", "EasyDict", dict)
    thing = Thing()
    thing.weights = torch.arange(6.0).reshape(2, 3)
    thing.rest = [1, "two", {3: torch.ones(2)}]
    options = Mapping(a=1, b=torch.zeros(3))
    path = tmp_path / "file.pkl"
    path.write_bytes(pickle.dumps({"thing": thing, "options": options, "counter": collections.Counter("aab")}))
    data = load_pickle(path)
    assert isinstance(data["thing"], StandIn) and data["thing"].qualname == "training.studio_test_fakes.Thing"
    state = data["thing"].state
    torch.testing.assert_close(state["weights"], torch.arange(6.0).reshape(2, 3))
    assert data["options"].keyed["a"] == 1 and isinstance(data["counter"], StandIn)


@pytest.mark.parametrize("culprit", ["os.system", "builtins.eval", "subprocess"])
def test_a_harmful_reduce_is_refused(tmp_path, culprit):
    sentinel = tmp_path / "pwned"
    if culprit == "os.system":
        payload = Harmful(sentinel)
    elif culprit == "builtins.eval":
        payload = type("Evil", (), {"__reduce__": lambda self: (eval, (f"open({str(sentinel)!r}, 'w')",))})()
    else:
        import subprocess

        payload = type("Evil", (), {"__reduce__": lambda self: (subprocess.call, (["touch", str(sentinel)],))})()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": torch.zeros(1), "x": payload}))
    with pytest.raises(StudioError) as error:
        load_pickle(path)
    message = str(error.value)
    assert "refused" in message and str(path) in message and "\n" not in message
    assert not sentinel.exists()


def test_pickled_module_state_matches_state_dict(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net[1].register_buffer("scratch", torch.ones(2), persistent=False)
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps({"net": net}))
    state = module_state(load_pickle(path)["net"])
    expected = net.state_dict()
    assert state.keys() == expected.keys()  # the non-persistent buffer is left out
    for k in expected:
        torch.testing.assert_close(state[k], expected[k])


def test_torch_zip_reader_keeps_tensors_and_neutralises_objects(tmp_path):
    Scheduler = _fake_class("lib.train.studio_test_fakes", "WarmupScheduler")
    scheduler = Scheduler()
    scheduler.milestones = collections.Counter([10, 20])
    scheduler.schedule = np.linspace(0, 1, 5)
    scheduler.last = torch.tensor(3.0)
    net = {"a.weight": torch.randn(3, 2), "b.bias": torch.arange(4, dtype=torch.int64)}
    path = tmp_path / "2100.pth"
    torch.save({"net": net, "scheduler": scheduler, "epoch": 2100}, path)
    with pytest.raises(Exception):  # the custom object is why weights_only loading fails on such files
        torch.load(path, weights_only=True)
    data = read_torch_zip(path)
    assert data["epoch"] == 2100 and isinstance(data["scheduler"], StandIn)
    for k, v in net.items():
        torch.testing.assert_close(data["net"][k], v)
    evil = tmp_path / "evil.pth"
    torch.save({"net": net, "scheduler": Harmful(tmp_path / "pwned")}, evil)
    with pytest.raises(StudioError, match="refused: it references posix.system|refused: it references os.system"):
        read_torch_zip(evil)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(StudioError, match="missing"):
        read_torch_zip(tmp_path / "absent.pth")


def test_npy_objects_are_read_without_allow_pickle(tmp_path):
    path = tmp_path / "kmeans.npy"
    np.save(path, {"labels": np.arange(5) % 2, "groups": {0: [0, 2, 4], 1: [1, 3]}}, allow_pickle=True)
    data = load_npy_object(path).item()
    np.testing.assert_array_equal(data["labels"], np.arange(5) % 2)
    np.save(tmp_path / "plain.npy", np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(load_npy_object(tmp_path / "plain.npy"), np.arange(6.0).reshape(2, 3))
    np.save(tmp_path / "evil.npy", np.array([Harmful(tmp_path / "pwned")], dtype=object), allow_pickle=True)
    with pytest.raises(StudioError, match="refused"):
        load_npy_object(tmp_path / "evil.npy")
    assert not (tmp_path / "pwned").exists()


def test_state_checks_name_the_tensor():
    expected = {"a": torch.Size([2, 3]), "b": torch.Size([4])}
    with pytest.raises(StudioError, match=r"f.pkl: tensor 'b' is missing"):
        check_state(expected, {"a": torch.zeros(2, 3)}, "f.pkl")
    with pytest.raises(StudioError, match=r"unexpected tensor 'c'"):
        check_state(expected, {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}, "f.pkl")
    with pytest.raises(StudioError, match=r"tensor 'a' has shape \[3, 2\], expected \[2, 3\]"):
        check_state(expected, {"a": torch.zeros(3, 2), "b": torch.zeros(4)}, "f.pkl")


def test_sizes_from_the_file_and_zip_bombs_are_refused(tmp_path):
    """A pickle may not make the reader allocate what it says (bytes(N), list(range(N))), and a
    torch.save archive may not hold a storage that inflates far beyond its compressed size."""
    import zipfile

    for payload, said in (
        (type("Big", (), {"__reduce__": lambda self: (bytes, (10**13,))})(), "asks for a bytes of 10000000000000 bytes"),
        (type("Long", (), {"__reduce__": lambda self: (list, (range(10**13),))})(), "refused: it references builtins.range"),
    ):
        path = tmp_path / "bomb.pkl"
        path.write_bytes(pickle.dumps({"G": torch.zeros(1), "x": payload}))
        with pytest.raises(StudioError, match=f"bomb.pkl: .*{said}") as error:
            load_pickle(path)
        assert "\n" not in str(error.value)
    plain = tmp_path / "plain.pth"
    torch.save({"net": {"w": torch.zeros(1 << 21)}}, plain)  # 8 MB of zeros
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED)
    with pytest.raises(StudioError, match=r"bomb.pth: entry .*data/0 would expand 8388608 bytes"):
        read_torch_zip(bomb)
    assert read_torch_zip(plain)["net"]["w"].shape == (1 << 21,)


def test_old_spconv_weight_layout_is_permuted_on_load():
    """spconv < 2.2 saved sparse-conv weights [3, 3, 3, in, out]; both layouts load into [out, 3, 3, 3, in]."""
    from studio.nerf import load_strict

    torch.manual_seed(0)
    net = SparseConvNet(4, (4, 6, 8, 8, 8))
    new = net.state_dict()
    old = {k: v.permute(1, 2, 3, 4, 0) if v.dim() == 5 else v for k, v in new.items()}
    assert old["conv0.0.weight"].shape == (3, 3, 3, 4, 4) and old["down0.0.weight"].shape == (3, 3, 3, 4, 6)
    with torch.device("meta"):
        fresh = SparseConvNet(4, (4, 6, 8, 8, 8))
    load_strict(fresh, old, "old.pth")
    for k, v in new.items():
        torch.testing.assert_close(fresh.state_dict()[k], v, msg=k)
    wrong = {**new, "down0.0.weight": torch.zeros(3, 3, 3, 6, 4)}  # neither layout
    with torch.device("meta"):
        fresh = SparseConvNet(4, (4, 6, 8, 8, 8))
    with pytest.raises(StudioError, match=r"old.pth: tensor 'down0.0.weight' has shape \[3, 3, 3, 6, 4\], expected \[6, 3, 3, 3, 4\]"):
        load_strict(fresh, wrong, "old.pth")


# --- shared networks ---------------------------------------------------------------------------------


def test_positional_encoding_is_pixelnerfs_layout():
    pe = PositionalEncoding(2, freq_factor=math.pi)
    x = torch.tensor([[0.1, -0.2, 0.3]])
    f0, f1 = math.pi, 2 * math.pi
    expected = torch.cat([x, torch.sin(f0 * x), torch.cos(f0 * x), torch.sin(f1 * x), torch.cos(f1 * x)], -1)
    torch.testing.assert_close(pe(x), expected)
    assert pe.d_out == 15 and pe.state_dict()["_freqs"].shape == (1, 4, 1)
    assert "_freqs" not in PositionalEncoding(2, persistent=False).state_dict()


def test_batch_statistics_use_the_batch_and_keep_the_running_ones():
    net = ResNet18(width=8, classes=0).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(5.0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        plain = net.stem(x)
        with use_batch_statistics(net):
            batch = net.stem(x)
    assert not torch.allclose(plain, batch)
    assert float(net.bn1.running_mean.mean()) == 5.0
    expected = F.relu(net.bn1.weight[None, :, None, None] * F.batch_norm(net.conv1(x), None, None, training=True) + net.bn1.bias[None, :, None, None])
    torch.testing.assert_close(batch, expected, atol=1e-5, rtol=1e-5)


def _random_volume(channels: int, *, seed: int = 0, extent: int = 12, count: int = 250):
    g = torch.Generator().manual_seed(seed)
    coords = torch.randint(0, extent, (count, 3), generator=g)
    return coords, torch.randn(count, channels, generator=g, dtype=torch.float64), (extent, extent, extent)


@pytest.mark.parametrize("stride", [1, 2])
def test_sparse_convolution_is_dense_conv3d_at_its_outputs(stride):
    coords, feat, shape = _random_volume(4)
    feat.requires_grad_(True)
    conv = SparseConv3d(4, 5, stride=stride).double()
    volume = make_sparse_volume(coords, feat, shape)  # repeated voxels are averaged
    out = conv(volume)
    dense = F.conv3d(volume.dense()[None], conv.weight.permute(0, 4, 1, 2, 3), padding=1, stride=stride)[0]
    c = out.coords
    expected = dense[:, c[:, 0], c[:, 1], c[:, 2]].T
    torch.testing.assert_close(out.features, expected)
    active = (F.conv3d((volume.dense().abs().sum(0) > 0).double()[None, None], torch.ones(1, 1, 3, 3, 3, dtype=torch.float64), padding=1, stride=stride)[0, 0] > 0)
    assert len(c) == int(active.sum()) if stride == 2 else len(c) == len(volume.coords)
    weights = torch.randn_like(out.features)
    grads = torch.autograd.grad((out.features * weights).sum(), [feat, conv.weight], retain_graph=True)
    expected_grads = torch.autograd.grad((expected * weights).sum(), [feat, conv.weight])
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)


def test_sparse_sampling_is_grid_sample_on_the_dense_volume():
    coords, feat, shape = _random_volume(3, extent=8, count=120)
    volume = make_sparse_volume(coords, feat.float(), (6, 8, 7) if False else shape)
    grid = torch.rand(500, 3) * 2.4 - 1.2  # some outside
    expected = F.grid_sample(volume.dense()[None], grid[None, None, None], align_corners=True, padding_mode="zeros")[0, :, 0, 0].T
    torch.testing.assert_close(sample_sparse(volume, grid), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # importing spconv takes seconds
def test_torch_sparse_network_equals_spconv():
    if not spconv_available():
        pytest.skip("spconv is not installed")
    torch.manual_seed(0)
    net = SparseConvNet(8, (8, 8, 16, 16, 16)).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    coords, feat, _ = _random_volume(8, extent=30, count=600)
    with torch.no_grad():
        a = net.stages(make_sparse_volume(coords, feat.float(), (32, 32, 32)), backend="torch")
        b = net.stages(make_sparse_volume(coords, feat.float(), (32, 32, 32)), backend="spconv")
    for x, y in zip(a, b):
        assert x.shape == y.shape
        torch.testing.assert_close(x.dense(), y.dense(), atol=1e-5, rtol=1e-5)


# --- rays, samples, nearest vertices -----------------------------------------------------------------


def test_pixel_rays_follow_the_official_convention():
    camera = Camera.look_at((0.3, 1.0, 3.0), (0.0, 0.8, 0.0), image_size=(6, 8))
    K = official_intrinsics(camera.K[0])
    origins, dirs = pixel_rays(K, camera.extrinsics[0], (6, 8))
    R = camera.extrinsics[0, :3, :3]
    cam_dirs = dirs @ R.T
    torch.testing.assert_close(cam_dirs[:, 2], torch.ones(48))  # camera-space depth 1
    # a point along pixel (u, v)'s ray projects back to the pixel's centre in studio's convention (u + 0.5)
    p = origins[13] + 2.5 * dirs[13]
    uvw = (p @ R.T + camera.extrinsics[0, :3, 3]) @ camera.K[0].T
    torch.testing.assert_close(uvw[:2] / uvw[2], torch.tensor([13 % 8 + 0.5, 13 // 8 + 0.5]))


def test_samples_lie_in_the_padded_box():
    g = torch.Generator().manual_seed(0)
    box = torch.tensor([[-0.3, -0.9, -0.2], [0.4, 0.8, 0.25]])
    origins = torch.tensor([[0.0, 0.0, 3.0]]).expand(400, 3)
    targets = torch.rand(400, 3, generator=g) * 2 - 1
    dirs = targets - origins
    near, far, hit = ray_box(origins, dirs, box, pad=0.01)
    z = sample_depths(near[hit], far[hit], 48)
    pts = origins[hit][:, None] + dirs[hit][:, None] * z[..., None]
    assert hit.any() and not hit.all()
    assert (pts >= box[0] - 0.01 - 1e-5).all() and (pts <= box[1] + 0.01 + 1e-5).all()
    assert torch.allclose(z[:, 0], near[hit]) and torch.allclose(z[:, -1], far[hit])
    # a miss misses: dense samples along it never enter the box
    t = torch.linspace(0, 2, 2000)
    missed = origins[~hit][:5, None] + dirs[~hit][:5, None] * t[:, None]
    inside = ((missed >= box[0] - 0.01) & (missed <= box[1] + 0.01)).all(-1)
    assert not inside.any()
    jittered = sample_depths(near[hit], far[hit], 48, jitter=torch.Generator().manual_seed(1))
    assert (jittered >= near[hit, None] - 1e-6).all() and (jittered <= far[hit, None] + 1e-6).all()
    assert not torch.allclose(jittered, z)


def test_vertex_grid_is_exact():
    g = torch.Generator().manual_seed(0)
    vertices = torch.rand(2000, 3, generator=g) * torch.tensor([0.6, 1.7, 0.3])
    vertices[:50] = vertices[0] + torch.rand(50, 3, generator=g) * 0.002  # a dense patch
    points = torch.rand(8000, 3, generator=g) * torch.tensor([0.9, 2.0, 0.6]) - 0.15
    truth_d, truth_i = knn(points, vertices, 1)
    close = truth_d[:, 0] <= 0.05
    for backend in ("torch", "kdtree"):  # the reference and the CPU fast path
        grid = VertexGrid(vertices, cell=0.05, backend=backend)
        dist, index = grid.nearest(points, block=2048, pairs=1 << 14) if backend == "torch" else grid.nearest(points)
        torch.testing.assert_close(dist[close], truth_d[close, 0])
        assert (index[close] == truth_i[close, 0]).float().mean() > 0.999  # exact but for distance ties
        assert (index[~close] == -1).all() and torch.isinf(dist[~close]).all()
        exact_d, _ = grid.nearest_exact(points[:500])
        torch.testing.assert_close(exact_d, truth_d[:500, 0])
        torch.testing.assert_close(grid.within(points, 0.03), truth_d[:, 0] < 0.03)


def test_knn_is_sorted_and_exact():
    g = torch.Generator().manual_seed(1)
    points, refs = torch.randn(100, 3, generator=g), torch.randn(40, 3, generator=g)
    d, i = knn(points, refs, 7, chunk=256)
    full = torch.cdist(points, refs)
    torch.testing.assert_close(d, full.sort(1).values[:, :7])
    assert (d[:, 1:] >= d[:, :-1]).all()


# --- compositing -------------------------------------------------------------------------------------


def test_composite_matches_the_brute_force_quadrature():
    g = torch.Generator().manual_seed(0)
    R, S = 64, 48
    z = torch.sort(torch.rand(R, S, generator=g) * 2 + 1, dim=1).values
    sigmas = torch.randn(R, S, generator=g) * 8
    sigmas[:5] = -80.0  # empty rays
    rgbs = torch.rand(R, S, 3, generator=g)
    norm = 1 + torch.rand(R, generator=g)
    ours = composite(sigmas, rgbs, z, norm)
    truth = composite_reference(sigmas, rgbs, z, norm)
    torch.testing.assert_close(ours.rgb, truth.rgb, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.opacity, truth.opacity, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.depth, truth.depth, atol=1e-4, rtol=1e-4)
    assert ours.opacity[:5].abs().max() == 0
    white = composite(sigmas, rgbs, z, norm, background=1.0)
    torch.testing.assert_close(white.rgb, ours.rgb + (1 - ours.opacity[:, None]))


@pytest.mark.gpu
def test_packed_cuda_compositing_equals_the_batched_one():
    from studio.nerf import composite_packed

    g = torch.Generator().manual_seed(0)
    z = torch.sort(torch.rand(32, 16, generator=g), 1).values.cuda()
    keep = (torch.rand(32, 16, generator=g) > 0.5).cuda()
    sig, rgb = (torch.randn(32, 16, generator=g) * 5).cuda(), torch.rand(32, 16, 3, generator=g).cuda()
    norm = torch.ones(32).cuda()
    batched = composite(torch.where(keep, sig, torch.full_like(sig, -80.0)), rgb * keep[..., None], z, norm)
    packed = composite_packed(sig[keep], rgb[keep], z, norm, keep)
    torch.testing.assert_close(packed.rgb, batched.rgb, atol=1e-5, rtol=1e-4)


# --- body warps ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smpl_pose(smpl_body):
    g = torch.Generator().manual_seed(3)
    params = {
        "betas": torch.randn(1, 10, generator=g) * 0.5, "global_orient": torch.tensor([[0.1, 0.5, -0.2]]),
        "body_pose": torch.randn(1, 63, generator=g) * 0.3, "transl": torch.tensor([[0.2, 0.1, -0.3]]),
    }  # fmt: skip
    return params, posed_body(smpl_body, params)


def test_lbs_round_trips_and_moves_vertices_exactly(smpl_body, smpl_pose):
    params, body = smpl_pose
    with torch.no_grad():
        torch.testing.assert_close(body.vertices, smpl_body(params).vertices[0], atol=1e-5, rtol=1e-5)
    ids = torch.arange(body.vertices.shape[0])
    torch.testing.assert_close(unpose(body.vertices, ids, body), body.rest, atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(0)
    points = body.vertices[ids[::7]] + torch.randn(len(ids[::7]), 3, generator=g) * 0.03
    torch.testing.assert_close(pose(unpose(points, ids[::7], body), ids[::7], body), points, atol=1e-5, rtol=1e-5)
    canonical = canonical_body(smpl_body)
    # Each posed vertex, warped by its own skinning, lands on its canonical vertex (shape and pose taken off).
    torch.testing.assert_close(warp(body.vertices, ids, body, canonical), canonical.vertices, atol=1e-4, rtol=1e-4)
    # Directions turn with the blended rotations.
    R = warp_rotations(ids[:5], body, canonical)
    expected = blend(canonical, ids[:5])[..., :3] @ torch.linalg.inv(blend(body, ids[:5])[..., :3])
    torch.testing.assert_close(R, expected)


def test_body_conversion_keeps_the_pose_and_the_pelvis(anny, smpl_body, walk):
    motion = walk[:3]
    converted = convert_condition(motion, anny, smpl_body)
    assert converted.body_model == "smpl" and converted.num_frames == 3
    torch.testing.assert_close(converted.body["body_pose"], motion.body["body_pose"])
    with torch.no_grad():
        torch.testing.assert_close(smpl_body.joints(dict(converted.body))[:, 0], anny.joints(dict(motion.body))[:, 0], atol=1e-4, rtol=1e-4)
    assert convert_condition(motion, anny, anny) is motion


def test_reference_crop_keeps_the_geometry(smpl_body):
    camera = Camera.look_at((0.0, 0.2, 3.0), (0.0, 0.0, 0.0), image_size=(300, 200))
    cond = stand_still(camera)
    image = (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)
    mask = cond.render(("mask",), body_model=smpl_body)["mask"][0]
    view = reference_view(image, mask, cond, size=64)
    assert view.image.shape == (3, 64, 64) and view.mask.any()
    assert (view.image[:, ~view.mask] == 0).all()  # background black
    with torch.no_grad():
        v = cond.posed(smpl_body).vertices[0][::500]
    def project(K, E):
        p = (v @ E[:3, :3].T + E[:3, 3]) @ K.T
        return p[:, :2] / p[:, 2:]
    full = project(official_intrinsics(camera.K[0]), camera.extrinsics[0])
    crop = project(view.K, view.extrinsics)
    scale = (crop[1] - crop[0]).norm() / (full[1] - full[0]).norm()
    torch.testing.assert_close((crop - crop[0]) / scale, full - full[0], atol=1e-3, rtol=1e-3)  # the same picture, scaled
    assert ((crop > -1) & (crop < 65)).all()


def test_metrics():
    a = np.random.default_rng(0).random((32, 32, 3))
    assert psnr(a, a) == float("inf") and abs(ssim(a, a) - 1) < 1e-9
    noisy = np.clip(a + 0.1, 0, 1)
    assert 15 < psnr(a, noisy) < 25 and ssim(a, noisy) < 0.99
    assert ssim(a, np.random.default_rng(1).random((32, 32, 3))) < 0.2


# --- training data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_source(smpl_body):
    from studio.nerf import AvatarSource

    cond = stand_still(Camera.look_at((0.0, 0.0, 3.2), (0.0, 0.0, 0.0), image_size=(160, 120)))
    mask = cond.render(("mask",), body_model=smpl_body)["mask"][0]
    image = np.zeros((160, 120, 3), np.uint8)
    image[..., 0] = np.linspace(40, 250, 160, dtype=np.uint8)[:, None]  # a vertical gradient on the person
    image[..., 2] = 120
    return AvatarSource("stick", image, mask, cond)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["sherf", "transhuman"])
def test_generator_writes_each_layout_and_reads_back(tmp_path, smpl_body, synthetic_source, walk, layout):
    from studio.nerf import MultiViewConfig, MultiViewDataset, generate_multiview_data, load_npy_object

    config = MultiViewConfig(size=48, views=3, heldout_views=1, poses=2)
    generate_multiview_data(tmp_path, [synthetic_source], [walk[:4]], body_model=smpl_body, layout=layout, config=config)
    subject = tmp_path / "000_stick"
    assert (tmp_path / "human_list.txt").read_text().split() == ["000_stick"]
    cameras = json.loads((subject / "cameras.json").read_text())
    assert [c["split"] for c in cameras["cameras"].values()] == ["train"] * 3 + ["heldout"]
    if layout == "sherf":
        assert (subject / "img" / "camera0002" / "0001.jpg").is_file() and (subject / "mask" / "camera0003" / "0000.png").is_file()
        smpl = np.load(subject / "outputs_re_fitting" / "refit_smpl_2nd.npz", allow_pickle=True)["smpl"].item()  # our own file
        assert smpl["body_pose"].shape == (2, 69) and smpl["betas"].shape == (1, 10)
    else:
        assert (subject / "Camera_B3" / "000001.jpg").is_file() and (subject / "mask" / "Camera_B4" / "000000.png").is_file()
        annots = load_npy_object(subject / "annots.npy").item()
        assert len(annots["cams"]["K"]) == 4 and len(annots["ims"]) == 2
        params = load_npy_object(subject / "params" / "1.npy").item()
        assert params["poses"].shape == (1, 72) and params["Th"].shape == (1, 3)
        # ZJU-MoCap's convention: world = SMPL(poses, shapes) @ R^T + Th reproduces the posed vertices.
        import roma

        R = roma.rotvec_to_rotmat(torch.from_numpy(params["Rh"]))[0]
        local = smpl_body({"betas": torch.from_numpy(params["shapes"]), "body_pose": torch.from_numpy(params["poses"][:, 3:66])}).vertices[0].detach()
        world = np.load(subject / "vertices" / "1.npy")
        torch.testing.assert_close(local @ R.T + torch.from_numpy(params["Th"]), torch.from_numpy(world), atol=1e-4, rtol=1e-4)
    dataset = MultiViewDataset(tmp_path, layout=layout, body_model=smpl_body)
    sample = dataset.sample(np.random.default_rng(0), references=2)
    assert sample.target.image.shape == (48, 48, 3) and len(sample.references) == 2
    assert (sample.target.mask > 127).mean() > 0.02  # the person is drawn
    assert sample.target.key[2] not in [r.key[2] for r in sample.references]
    person = sample.target.mask > 127
    assert sample.target.image[person].mean() > 30 and sample.target.image[~person].mean() < 5  # textured body on black
    held = list(dataset.heldout(references=1))
    assert len(held) == 2 and all(s.target.key[2] == 3 for s in held)


def test_dataset_errors_are_one_line(tmp_path, smpl_body):
    from studio.nerf import MultiViewDataset

    with pytest.raises(StudioError, match="no subjects"):
        MultiViewDataset(tmp_path, layout="sherf", body_model=smpl_body)
    with pytest.raises(StudioError, match="unknown dataset layout"):
        MultiViewDataset(tmp_path, layout="blender", body_model=smpl_body)


def test_box_padding():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    torch.testing.assert_close(body_box(v, (0.0, 0.05, 0.0)), torch.tensor([[0.0, -0.05, 0.0], [1.0, 2.05, 3.0]]))
    assert body_params(HumanCondition("smpl", {"betas": torch.zeros(2, 10)}, Camera.look_at((0, 0, 3), (0, 0, 0), image_size=(4, 4), num_frames=2)), 1)["betas"].shape == (1, 10)
