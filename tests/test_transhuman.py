"""TransHuman: the official parameter tree, safe loading of a synthetic ``2100.pth`` with a custom
scheduler object, the official clustering file, exact pixel features, train-mode BatchNorm, the shared
contract, training and `studio novel-view`."""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ASSETS, ROOT
from pipeline_contract import ContractCase, PipelineContract
from test_nerf import Harmful, novel_view_command, overfit_losses, stand_still, tiny_dataset

from pipelines.transhuman import TransHumanConfig, TransHumanModelConfig, TransHumanNet, TransHumanPipeline
from pipelines.transhuman.model import MODEL_SIZES, build_net, kmeans
from pipelines.transhuman.weights import CONFIG_FILE
from studio.camera import Camera
from studio.errors import StudioError
from studio.pipeline import AnimateRequest, NovelViewRequest

OFFICIAL_KEYS = ROOT.parent / "shared" / "transhuman_official_keys"
TINY = MODEL_SIZES["tiny"]


def tiny_net(seed: int = 0, config: TransHumanModelConfig = TINY) -> TransHumanNet:
    return build_net(config, seed=seed, density_bias=0.5)


def write_official_checkpoint(folder: Path, net: TransHumanNet, *, harmful: Path | None = None, labels: np.ndarray | None = None) -> Path:
    """``2100.pth`` as TransHuman's trainer saves it: net, optimiser state, a custom scheduler object
    (its class importable only while writing), recorder and epoch; a model_config.json with the tiny
    sizes and, with ``labels``, the official ``kmeans_dict_<k>.npy``."""
    folder.mkdir(parents=True, exist_ok=True)
    before = set(sys.modules)
    try:
        for name in ("lib", "lib.train", "lib.train.scheduler"):
            sys.modules.setdefault(name, types.ModuleType(name))
        Scheduler = type("MultiStepLR", (), {"__module__": "lib.train.scheduler", "__qualname__": "MultiStepLR"})
        sys.modules["lib.train.scheduler"].MultiStepLR = Scheduler
        scheduler = Scheduler()
        scheduler.milestones = collections.Counter([1000, 2000])
        scheduler.schedule = np.linspace(7e-4, 1e-6, 10)
        scheduler.last_epoch = torch.tensor(2100)
        optim = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 7e-4, "params": [0]}]}
        container = {"net": net.state_dict(), "optim": optim, "scheduler": Harmful(harmful) if harmful else scheduler, "recorder": {"step": 2100}, "epoch": 2100}
        torch.save(container, folder / "2100.pth")
    finally:
        for added in set(sys.modules) - before:
            del sys.modules[added]
    (folder / CONFIG_FILE).write_text(net.config.to_json())
    if labels is not None:
        groups = {int(c): list(np.flatnonzero(labels == c)) for c in np.unique(labels)}
        np.save(folder / f"kmeans_dict_{net.config.num_clusters}.npy", {"pc2voxel_ind": labels, "dict_voxel2pc_ind": groups}, allow_pickle=True)
    return folder / "2100.pth"


def test_full_size_network_has_the_official_keys_and_shapes():
    official = json.loads((OFFICIAL_KEYS / "net.json").read_text())
    with torch.device("meta"):
        net = TransHumanNet()
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == official
    assert len(ours) == 412 and sum(int(np.prod(s)) for s in ours.values()) == 21_966_585


def test_official_checkpoint_loads_strictly_with_its_clustering(tmp_path, smpl_body):
    net = tiny_net(1)
    labels = (np.arange(smpl_body.num_vertices) * 7919) % TINY.num_clusters
    path = write_official_checkpoint(tmp_path, net, labels=labels)
    with pytest.raises(Exception):  # the scheduler object: why weights_only loading refuses the release
        torch.load(path, weights_only=True)
    assert TransHumanPipeline.weights_status(tmp_path) == (True, f"found {path}")
    assert TransHumanPipeline.body_model_for(tmp_path) == "smpl"
    pipe = TransHumanPipeline.load(tmp_path, TransHumanConfig(device="cpu"))
    for key, value in net.state_dict().items():
        torch.testing.assert_close(pipe.net.state_dict()[key], value, msg=key)
    clusters = pipe.clusters(smpl_body)
    assert torch.equal(clusters.labels, torch.from_numpy(labels))


def test_a_harmful_scheduler_is_refused(tmp_path):
    write_official_checkpoint(tmp_path, tiny_net(), harmful=tmp_path / "pwned")
    with pytest.raises(StudioError) as error:
        TransHumanPipeline.load(tmp_path, TransHumanConfig(device="cpu"))
    assert "2100.pth: refused" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "pwned").exists()


def test_missing_files_tensors_and_shapes_are_one_line(tmp_path):
    ok, message = TransHumanPipeline.weights_status(None)
    assert not ok and "--weights" in message and "pansanity666/TransHuman" in message
    ok, message = TransHumanPipeline.weights_status(tmp_path)
    assert not ok and "2100.pth" in message
    net = tiny_net()
    state = net.state_dict()
    write_official_checkpoint(tmp_path, net)
    del state["alpha_fc.bias"]
    torch.save({"net": state, "epoch": 1}, tmp_path / "2100.pth")
    with pytest.raises(StudioError, match=r"2100.pth \(net\): tensor 'alpha_fc.bias' is missing"):
        TransHumanPipeline.load(tmp_path, TransHumanConfig(device="cpu"))
    state = net.state_dict()
    state["fc_0.weight"] = torch.zeros(3, 3, 1)
    torch.save({"net": state}, tmp_path / "2100.pth")
    with pytest.raises(StudioError, match=r"tensor 'fc_0.weight' has shape \[3, 3, 1\], expected \[32, 87, 1\]"):
        TransHumanPipeline.load(tmp_path, TransHumanConfig(device="cpu"))
    torch.save({"optim": {}}, tmp_path / "2100.pth")
    with pytest.raises(StudioError, match="no 'net' entry"):
        TransHumanPipeline.load(tmp_path, TransHumanConfig(device="cpu"))


def test_studio_weights_round_trip(tmp_path):
    from pipelines.transhuman.weights import load_net, read_clusters, save_net

    net = tiny_net(2, dataclasses.replace(TINY, body_model="anny"))
    labels = torch.arange(50) % TINY.num_clusters
    save_net(tmp_path / "transhuman", net, labels)
    assert TransHumanPipeline.body_model_for(tmp_path) == "anny"
    loaded, path = load_net(tmp_path)
    assert path.name == "transhuman.safetensors" and loaded.config == net.config
    assert torch.equal(read_clusters(tmp_path, 50, TINY.num_clusters), labels)
    with pytest.raises(StudioError, match="expected 60 integer cluster labels"):
        read_clusters(tmp_path, 60, TINY.num_clusters)


def test_pixel_features_equal_sampling_the_full_size_map():
    """The official code up-samples each encoder map to the image size, concatenates, then samples;
    studio samples without building that map: the same numbers."""
    net = tiny_net()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        latents = net.encoder.latents(images)
        uv = torch.rand(2, 50, 2) * 70 - 3  # some outside: border padding
        ours = net.encoder.pixel_features(latents, images, uv)
        full = torch.cat([F.interpolate(l, (64, 64), mode="bilinear", align_corners=True) for l in latents] + [net.encoder.upsample_color(images)], 1)
        grid = (uv * 2 / 63 - 1)[:, :, None, :]
        expected = F.grid_sample(full, grid, align_corners=True, padding_mode="border")[..., 0]
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net.encoder.reduce(ours), F.grid_sample(net.encoder.reduction_layer(full), grid, align_corners=True, padding_mode="border")[..., 0], atol=1e-5, rtol=1e-5)


def test_cross_view_attention_is_the_official_computation():
    """Body features query the views' pixel features, per point, softmax over the key views, plus the
    query's value: studio batches it differently, the official code with per-point bmm on [N, C, V]."""
    net = tiny_net(4)
    V, N = 3, 9
    human, pixel = torch.randn(V, TINY.embed_dim + 63, N), torch.randn(V, TINY.pixel_dim, N)
    with torch.no_grad():
        ours = net._aggregate(human, pixel)
        ske = F.relu(net.fc_0(human))
        pix = F.relu(net.alpha_res_0(pixel))
        kv0, kv1 = net.spatial_key_value_0, net.spatial_key_value_1
        key, value = kv0.key_embed(pix.permute(2, 1, 0)), kv0.value_embed(pix.permute(2, 1, 0))
        q_key, q_value = kv1.key_embed(ske.permute(2, 1, 0)), kv1.value_embed(ske.permute(2, 1, 0))
        attn = torch.softmax(torch.bmm(key.transpose(1, 2), q_key) / key.shape[1] ** 0.5, dim=1)
        official = (q_value + torch.bmm(value, attn)).permute(2, 1, 0)
        official = F.relu(net.fc_2(F.relu(net.fc_1(official))))
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=1e-5)


def test_kmeans_clusters_every_point_and_repeats():
    points = torch.rand(200, 3)
    a, b = kmeans(points, 12), kmeans(points, 12)
    assert torch.equal(a, b) and set(a.tolist()) == set(range(12))


# --- the pipeline ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(smpl_body):
    """Two photos of the synthetic SMPL body (front and back) and a 2-frame orbit."""
    from studio.tasks import orbit_target

    images, masks, refs = [], [], []
    for z, colour in ((3.0, (220, 60, 40)), (-3.0, (40, 60, 220))):
        ref = stand_still(Camera.look_at((0.0, 0.0, z), (0.0, 0.0, 0.0), image_size=(120, 90)))
        mask = ref.render(("mask",), body_model=smpl_body)["mask"][0]
        image = np.zeros((120, 90, 3), np.uint8)
        image[mask > 0] = colour
        images.append(image)
        masks.append(mask)
        refs.append(ref)
    target = orbit_target(refs[0], smpl_body, num_frames=2, size=(20, 16))
    return images, masks, refs, target


def tiny_pipeline(config: TransHumanConfig | None = None, *, seed: int = 0) -> TransHumanPipeline:
    return TransHumanPipeline(tiny_net(seed), dataclasses.replace(config or TransHumanConfig(), reference_size=64, device="cpu"))


@pytest.mark.slow  # renders
def test_references_change_the_rendering_and_batchnorm_uses_them(scene, smpl_body):
    images, masks, refs, target = scene
    pipe = tiny_pipeline()
    running = [m.running_mean.clone() for m in pipe.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    both = pipe.render(images, masks, refs, target, (20, 16), body_model=smpl_body)
    front = pipe.render(images[:1], masks[:1], refs[:1], target, (20, 16), body_model=smpl_body)
    assert both.shape == front.shape == (2, 20, 16, 3) and not np.array_equal(both, front)
    after = [m.running_mean for m in pipe.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after))  # batch statistics, running ones untouched
    stored = tiny_pipeline(TransHumanConfig(batchnorm="running")).render(images, masks, refs, target, (20, 16), body_model=smpl_body)
    assert not np.array_equal(both, stored)
    silhouette = target.render(("mask",), size=(20, 16), body_model=smpl_body)["mask"] > 0
    far = ~torch.nn.functional.max_pool2d(torch.from_numpy(silhouette).float()[:, None], 7, 1, 3)[:, 0].bool().numpy()
    assert both[far].max() == 0  # black where no sample is near the body


class TestTransHumanContract(PipelineContract):
    @pytest.mark.slow  # renders
    def test_each_task_end_to_end(self, contract):
        super().test_each_task_end_to_end(contract)

    @pytest.mark.slow  # renders three times
    def test_seeding(self, contract):
        super().test_seeding(contract)

    @pytest.fixture
    def contract(self, scene, smpl_body):
        images, masks, refs, target = scene

        def make_request(task, *, seed=0, **fields):
            if task == "novel_view":
                base = dict(references=images, reference_masks=masks, reference_conditions=refs, target=target, size=(20, 16), body_model=smpl_body, seed=seed)
                return NovelViewRequest(**{**base, **fields})
            base = dict(reference=images[0], reference_mask=masks[0], reference_condition=refs[0], motion=target, size=(20, 16), body_model=smpl_body, seed=seed)
            return AnimateRequest(**{**base, **fields})

        return ContractCase(TransHumanPipeline, lambda config: tiny_pipeline(config), make_request, deterministic=True)


# --- training and the command --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, smpl_body, scene, walk):
    from studio.nerf import AvatarSource

    images, masks, refs, _ = scene
    return tiny_dataset(tmp_path_factory.mktemp("transhuman_data"), AvatarSource("stick", images[0], masks[0], refs[0]), smpl_body, walk, "transhuman")


@pytest.mark.slow
def test_training_steps_reduce_the_loss(dataset_dir, smpl_body):
    from pipelines.transhuman.train import TransHumanTrainingModel
    from studio.nerf import MultiViewDataset

    dataset = MultiViewDataset(dataset_dir, layout="transhuman", body_model=smpl_body)
    model = TransHumanTrainingModel(build_net(dataclasses.replace(TINY, body_model="smpl"), seed=3), smpl_body, rays=256, config=TransHumanConfig(reference_size=64))
    losses = overfit_losses(model, dataset.sample(np.random.default_rng(0), references=2))  # the same rays each step: an overfit
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_train_script_writes_weights_that_render(dataset_dir, tmp_path, smpl_dir, monkeypatch, capsys, scene, smpl_body):
    from pipelines.transhuman.train import main

    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    out = tmp_path / "run"
    code = main(["train", "--data", str(dataset_dir), "--output", str(out), "--body", "smpl", "--model-size", "tiny", "--steps", "2", "--rays", "64", "--references", "2"])
    assert code == 0, capsys.readouterr().err
    pipe = TransHumanPipeline.load(out, TransHumanConfig(reference_size=64, device="cpu"))
    images, masks, refs, target = scene
    assert pipe.render(images, masks, refs, target[:1], (20, 16), body_model=smpl_body).shape == (1, 20, 16, 3)


@pytest.mark.slow
def test_studio_novel_view_with_an_official_file(tmp_path, smpl_dir, monkeypatch):
    from studio.body import load_body_model
    from studio.media import read_video_frames
    from studio.tasks import TaskOptions, run_novel_view

    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    write_official_checkpoint(tmp_path / "weights", tiny_net())
    out = tmp_path / "orbit.mp4"
    options = TaskOptions(backend="transhuman", weights=str(tmp_path / "weights"), settings=("reference_size=64", "device=cpu"))
    run_novel_view([ASSETS / "media" / "ref_sitting.jpg"], out, options=options, body_model=load_body_model(), orbit=2, size=64)
    frames = np.stack(list(read_video_frames(out)))
    assert frames.shape[0] == 2 and max(frames.shape[1:3]) == 64


@pytest.mark.slow
def test_the_command_loads_the_official_checkpoint_strictly_and_names_what_is_wrong(tmp_path, smpl_dir, monkeypatch, capsys):
    """`studio novel-view --method transhuman` as a user runs it, on ``2100.pth`` in the official
    container (two photos): it renders; a missing file, a missing tensor and a wrong shape each give
    one line naming it and write nothing."""
    from studio.media import read_video_frames

    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    weights, out = tmp_path / "weights", tmp_path / "orbit.mp4"

    def novel_view() -> tuple[int, str]:
        return novel_view_command(capsys, [str(ASSETS / "media" / "ref_sitting.jpg")] * 2, out, method="transhuman", weights=weights)

    weights.mkdir()
    code, err = novel_view()
    assert code == 1 and "lacks 2100.pth" in err and "pansanity666/TransHuman" in err and "Traceback" not in err
    net = tiny_net()
    write_official_checkpoint(weights, net)
    code, err = novel_view()
    assert code == 0, err
    assert len(list(read_video_frames(out))) == 2
    out.unlink()
    out.with_suffix(".json").unlink()
    state = net.state_dict()
    del state["rgb_fc.weight"]
    torch.save({"net": state, "epoch": 2100}, weights / "2100.pth")
    code, err = novel_view()
    assert code == 1 and "2100.pth (net): tensor 'rgb_fc.weight' is missing" in err and len(err.strip().splitlines()) == 1, err
    state = {**net.state_dict(), "rgb_fc.weight": torch.zeros(3, 7, 1)}
    torch.save({"net": state, "epoch": 2100}, weights / "2100.pth")
    code, err = novel_view()
    assert code == 1 and "tensor 'rgb_fc.weight' has shape [3, 7, 1], expected [3, 16, 1]" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not out.with_suffix(".json").exists()
