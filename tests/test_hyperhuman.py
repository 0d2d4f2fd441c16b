"""HyperHuman (stage 1, the refiner, training) and the ControlNet path, on tiny random networks built
from config in code: the architecture as the paper states it, sampling, loading from local diffusers
folders, the ``studio image`` job, the web demo's job, and the shared pipeline contract."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ASSETS, ROOT
from pipeline_contract import ContractCase, PipelineContract

from pipelines.hyperhuman import HyperHumanConfig, HyperHumanPipeline, make_scheduler, stage1_size
from pipelines.hyperhuman import random_weights as rw
from pipelines.hyperhuman.conditioning import bae_normal, render_structure, structure_tensor
from pipelines.hyperhuman.controlnet import ControlNetConfig, ControlNetPipeline, control_images
from studio.errors import StudioError
from studio.pipeline import ImageRequest, make_config

WALK = ASSETS / "motions" / "walk.npz"
SIZE = (64, 64)


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pose(walk):
    """One frame of the bundled walk, its camera at the output size (as the job hands it over)."""
    frame = walk[3]
    return dataclasses.replace(frame, camera=frame.camera.resized(SIZE))


@pytest.fixture(scope="module")
def stage1():
    return rw.hyperhuman_components()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A weights root with tiny random HyperHuman (with the refiner) and SD 1.5 ControlNet folders."""
    root = tmp_path_factory.mktemp("weights")
    rw.write_hyperhuman_weights(root, refiner=True)
    rw.write_controlnet_weights(root)
    return root


@pytest.fixture
def layout(tmp_path) -> Path:
    """Every file both pipelines look for, empty: enough for the weights checks (nothing is loaded)."""
    from pipelines.hyperhuman.weights import CONTROLNET_BASE_FILES, HYPERHUMAN_FILES, REFINER_FILES

    for prefix, requirements in (("hyperhuman", HYPERHUMAN_FILES + REFINER_FILES), ("controlnet", CONTROLNET_BASE_FILES)):
        for paths, _ in requirements:
            (tmp_path / prefix / paths[0]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / prefix / paths[0]).touch()
    for name in ("openpose", "depth", "normal"):
        (tmp_path / "controlnet" / name).mkdir()
        for file in ("config.json", "diffusion_pytorch_model.safetensors"):
            (tmp_path / "controlnet" / name / file).touch()
    return tmp_path


def tiny_pipeline(components: dict, **settings) -> HyperHumanPipeline:
    config = dataclasses.replace(HyperHumanConfig(), steps=3, **settings)
    return HyperHumanPipeline(**components, config=config)


def request(pose, body_model, *, seed: int = 0, prompt: str | None = "a person walking", **fields) -> ImageRequest:
    return ImageRequest(prompt=prompt, pose=pose, size=SIZE, body_model=body_model, seed=seed, **fields)


# --- stage 1: the architecture -----------------------------------------------------------------------------


def test_one_expert_per_modality_in_the_stated_blocks(stage1):
    from diffusers.models.unets.unet_2d_blocks import CrossAttnDownBlock2D, CrossAttnUpBlock2D

    unet = stage1["unet"]
    assert unet.modalities == ("rgb", "depth", "normal")
    base = rw.unet("sd2")
    shared = {id(p) for name, p in unet.named_parameters() if not name.startswith("experts.")}
    seen: set[int] = set()
    for expert in unet.experts.values():
        assert isinstance(expert.down, CrossAttnDownBlock2D) and isinstance(expert.up, CrossAttnUpBlock2D)
        assert type(expert.down) is type(base.down_blocks[0]) and type(expert.up) is type(base.up_blocks[-1])
        own = {id(p) for p in expert.parameters()}
        assert not own & shared and not own & seen  # each expert's tensors are its own
        seen |= own
    # The trunk is the base UNet's blocks 2.. / ..n-1, once: the parameter count adds up.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    extra_inputs = unet.condition_channels * unet.experts["rgb"].conv_in.out_channels * 9  # the skeleton's 3x3 input weights
    expert_size = count(unet.experts["rgb"]) - extra_inputs  # the base's conv_in, first down, last up and head
    assert count(unet) == count(base) + 2 * expert_size + 3 * extra_inputs + count(unet.size_embedding)
    assert len(unet.shared_down) == len(base.down_blocks) - 1 and len(unet.shared_up) == len(base.up_blocks) - 1


def test_full_size_stage1_has_eight_input_channels_and_sd2_base_dims():
    from diffusers import UNet2DConditionModel

    from pipelines.hyperhuman.model import StructuralUNet

    with torch.device("meta"):
        base = UNet2DConditionModel(**rw.UNET_CONFIGS[("sd2", "full")])
        unet = StructuralUNet.from_base(base)
    for expert in unet.experts.values():
        assert expert.conv_in.in_channels == 8 and expert.conv_out.out_channels == 4
        assert expert.down.resnets[0].out_channels == 320 and expert.down.attentions[0].transformer_blocks[0].attn2.heads == 5
    heads = [b.attentions[0].transformer_blocks[0].attn1.heads for b in unet.shared_down if hasattr(b, "attentions")]
    assert heads == [10, 20] and unet.mid_block.attentions[0].transformer_blocks[0].attn2.to_k.in_features == 1024


def test_from_base_starts_as_the_base_unet():
    """With the three inputs equal, every modality's prediction is the base UNet's (new input
    channels and the micro-conditioning start at zero; the experts' features are averaged)."""
    from pipelines.hyperhuman.model import StructuralUNet

    base = rw.unet("sd2", seed=3)
    for p in base.parameters():  # the random init zeroes some outputs; make everything count
        torch.nn.init.normal_(p, std=0.05)
    unet = StructuralUNet.from_base(base)
    x, text, t = torch.randn(2, 4, 8, 8), torch.randn(2, 7, 32), torch.tensor([10, 700])
    out = unet(x[None].expand(3, -1, -1, -1, -1), t, text, condition=torch.randn(2, 4, 8, 8), size_ids=torch.rand(2, 4) * 512)
    assert out.shape == (3, 2, 4, 8, 8)
    torch.testing.assert_close(out, base(x, t, text).sample[None].expand(3, -1, -1, -1, -1), atol=1e-5, rtol=1e-5)


def test_shared_blocks_serve_every_modality_and_experts_only_their_own(stage1):
    """A loss on the depth output alone reaches the shared trunk and the depth expert, and every
    expert's input half (through the fused features), but not the image's or normal's output half."""
    unet = stage1["unet"]
    unet.zero_grad()
    out = unet(
        torch.randn(3, 1, 4, 8, 8),
        torch.tensor([500]),
        torch.randn(1, 7, 32),
        condition=torch.randn(1, 4, 8, 8),
        size_ids=torch.zeros(1, 4),
    )
    out[1].square().mean().backward()
    grad = lambda m: sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)  # noqa: E731
    assert grad(unet.shared_down) > 0 and grad(unet.mid_block) > 0 and grad(unet.shared_up) > 0
    assert grad(unet.experts["depth"].up) > 0 and grad(unet.experts["depth"].conv_out) > 0
    for other in ("rgb", "normal"):
        assert grad(unet.experts[other].down) > 0  # averaged into the trunk
        assert grad(unet.experts[other].up) == 0 and grad(unet.experts[other].conv_out) == 0
    unet.zero_grad()


def test_zero_terminal_snr_v_prediction_schedule():
    scheduler = make_scheduler()
    assert float(scheduler.alphas_cumprod[-1]) == 0.0 and float(scheduler.alphas_cumprod[0]) > 0.99
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.rescale_betas_zero_snr
    scheduler.set_timesteps(50)
    assert int(scheduler.timesteps[0]) == 999 and len(scheduler.timesteps) == 50  # sampling starts from pure noise


def test_latent_statistics_round_trip(stage1):
    unet = stage1["unet"]
    stats = {m: {"mean": [0.1 * i, -0.2, 0.0, 0.3], "std": [1.0 + i, 0.5, 2.0, 1.0]} for i, m in enumerate(unet.modalities)}
    unet.register_to_config(latent_stats=stats)
    try:
        z = torch.randn(2000, 4, 2, 2) * torch.tensor(stats["depth"]["std"]).reshape(1, 4, 1, 1) + torch.tensor(
            stats["depth"]["mean"]
        ).reshape(1, 4, 1, 1)
        moved = unet.to_image_statistics(z, "depth")
        torch.testing.assert_close(moved.mean((0, 2, 3)), torch.tensor(stats["rgb"]["mean"]), atol=0.1, rtol=0)
        torch.testing.assert_close(moved.std((0, 2, 3)), torch.tensor(stats["rgb"]["std"]), atol=0.1, rtol=0.05)
        torch.testing.assert_close(unet.from_image_statistics(moved, "depth"), z, atol=1e-5, rtol=1e-5)
        assert unet.to_image_statistics(z, "rgb") is z
    finally:
        unet.register_to_config(latent_stats=None)


# --- stage 1: sampling ------------------------------------------------------------------------------------


def test_joint_sampling_returns_image_depth_and_normal(stage1, pose, anny):
    pipe = tiny_pipeline(stage1)
    skeleton = render_structure(pose, anny, SIZE)["skeleton"]
    out = pipe.sample_structure(skeleton, "a person", seed=0)
    assert out["rgb"].shape == (*SIZE, 3) and out["depth"].shape == SIZE and out["normal"].shape == (*SIZE, 3)
    assert all(v.dtype == np.uint8 for v in out.values())
    again = pipe.sample_structure(skeleton, "a person", seed=0)
    for name in out:
        np.testing.assert_array_equal(out[name], again[name])
    # The skeleton is a condition: another pose gives another image.
    moved = pipe.sample_structure(np.roll(skeleton, 16, axis=1), "a person", seed=0)
    assert not np.array_equal(out["rgb"], moved["rgb"])


def test_stage1_size_keeps_multiples_of_64():
    assert stage1_size((1024, 768), 512) == (512, 384)
    assert stage1_size((512, 512), 1024) == (512, 512)
    assert all(s % 64 == 0 for s in stage1_size((1088, 704), 512))


def test_the_image_task_reports_progress_and_maps(stage1, pose, anny):
    pipe = tiny_pipeline(stage1)
    calls = []
    result = pipe.image(request(pose, anny, on_progress=lambda done, total: calls.append((done, total))))
    assert calls == [(i, 3) for i in range(1, 4)]
    assert set(result.maps) == {"depth", "normal"} and result.maps["depth"].shape == SIZE


# --- the refiner ------------------------------------------------------------------------------------------


def test_structure_embedders_are_three_summed():
    from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

    from pipelines.hyperhuman.model import StructureEmbedder

    embedder = rw.randomize_zero_layers(StructureEmbedder(32))
    assert list(embedder.embedders) == ["skeleton", "depth", "normal"]
    for e in embedder.embedders.values():
        assert isinstance(e, ControlNetConditioningEmbedding)
        assert [c.out_channels for c in [e.conv_in, *e.blocks[1::2]]] == [16, 32, 96, 256]
    maps = torch.rand(2, 7, 64, 64)
    parts = torch.split(maps, [3, 1, 3], dim=1)
    expected = sum(e(p) for e, p in zip(embedder.embedders.values(), parts))
    out = embedder(maps)
    assert out.shape == (2, 32, 8, 8)
    torch.testing.assert_close(out, expected)


def test_structure_tensor_drops_missing_maps():
    maps = {"skeleton": np.full((8, 8, 3), 255, np.uint8), "normal": np.full((8, 8, 3), 51, np.uint8)}
    x = structure_tensor(maps, {"skeleton": 3, "depth": 1, "normal": 3})
    assert x.shape == (1, 7, 8, 8)
    assert float(x[0, :3].min()) == 1.0 and float(x[0, 3].abs().max()) == 0.0 and abs(float(x[0, 4:].mean()) - 0.2) < 1e-6


@pytest.mark.slow
def test_hyperhuman_with_the_refiner_from_a_weights_folder(weights, pose, anny):
    ok, message = HyperHumanPipeline.weights_status(weights)
    assert ok and "refiner found" in message
    pipe = HyperHumanPipeline.load(weights, HyperHumanConfig(steps=2, refiner_steps=2, stage1_size=64))
    assert pipe.refiner is not None
    calls = []
    result = pipe.image(ImageRequest(prompt="a dancer", pose=dataclasses.replace(pose, camera=pose.camera.resized((128, 64))), size=(128, 64), body_model=anny,
                                     on_progress=lambda d, t: calls.append((d, t))))  # fmt: skip
    assert (
        result.image.shape == (128, 64, 3)
        and result.maps["stage1"].shape == (64, 64, 3)
        and result.maps["normal"].shape == (128, 64, 3)
    )
    assert calls[-1] == (4, 4)
    off = HyperHumanPipeline.load(weights, HyperHumanConfig(steps=2, refine=False))
    assert off.refiner is None


# --- training ---------------------------------------------------------------------------------------------


def write_dataset(folder: Path, walk, *, frames=(0, 20, 40), size=(80, 64)) -> Path:
    """A tiny training set: the walk's normal renders as 'photos', captions, poses; one user depth map."""
    from studio.media import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in frames:
        frame = dataclasses.replace(walk[i], camera=walk[i].camera.resized(size))
        write_image(folder / f"walk{i:02d}.png", frame.render(("normal",))["normal"][0])
        frame.save(folder / f"walk{i:02d}.npz")
        (folder / f"walk{i:02d}.txt").write_text(f"a person walking, frame {i}")
    gradient = np.tile(np.linspace(0, 255, size[1], dtype=np.uint8), (size[0], 1))
    write_image(folder / f"walk{frames[0]:02d}_depth.png", np.repeat(gradient[..., None], 3, axis=2))
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, walk):
    from pipelines.hyperhuman.train import HumanImageDataset, find_samples

    folder = write_dataset(tmp_path_factory.mktemp("data"), walk)
    return HumanImageDataset(find_samples(folder), 64)


@pytest.mark.slow
def test_dataset_items_and_user_maps(dataset):
    item = dataset[0]
    assert item["pixels"].shape == (3, 64, 64) and item["skeleton"].shape == (3, 64, 64) and item["normal"].shape == (3, 64, 64)
    assert item["caption"] == "a person walking, frame 0"
    assert item["size_ids"].tolist() == [80, 64, 8, 0]  # 80x64 scaled to 80x64, cropped 8 rows from the top
    # The supplied depth map (a left-to-right ramp) replaced the body render, cropped like the image.
    assert torch.all(item["depth"][0, :, 1:] >= item["depth"][0, :, :-1]) and float(item["depth"][0, 0, -1]) > 0.95
    assert float(dataset[1]["depth"][0, 0, 0]) == 0.0  # the render: background 0


def stage1_trainer(components: dict, **settings):
    from pipelines.hyperhuman.train import Stage1Trainer, TrainConfig

    config = TrainConfig(size=64, learning_rate=1e-3, gradient_checkpointing=False, **settings)
    return Stage1Trainer(
        unet=components["unet"],
        vae=components["vae"],
        text_encoder=components["text_encoder"],
        tokenizer=components["tokenizer"],
        config=config,
    )


def refiner_trainer(**settings):
    from diffusers import DDPMScheduler

    from pipelines.hyperhuman.model import StructureControlNet
    from pipelines.hyperhuman.train import RefinerTrainer, TrainConfig

    xl = rw.sdxl_components()
    controlnet = rw.randomize_zero_layers(StructureControlNet.from_unet(xl["unet"]))
    config = TrainConfig(stage="refiner", size=64, learning_rate=1e-3, gradient_checkpointing=False, **settings)
    return RefinerTrainer(
        controlnet=controlnet, unet=xl["unet"], vae=xl["vae"], text_encoders=[xl["text_encoder"], xl["text_encoder_2"]],
        tokenizers=[xl["tokenizer"], xl["tokenizer_2"]], noise_scheduler=DDPMScheduler.from_config(xl["scheduler"].config), config=config,
    )  # fmt: skip


def batch_of(dataset) -> dict:
    return next(iter(torch.utils.data.DataLoader(dataset, batch_size=len(dataset))))


@pytest.mark.slow
def test_dropped_conditions_are_really_dropped(dataset):
    batch = batch_of(dataset)
    trainer = stage1_trainer(rw.hyperhuman_components(), condition_dropout=1.0)
    _, skeleton = trainer.latents(batch)
    text, condition, dropped = trainer.conditions(batch, skeleton)
    assert dropped.all() and float(condition.abs().max()) == 0.0
    torch.testing.assert_close(text, trainer.empty_text.expand_as(text))
    trainer.config.condition_dropout = 0.0
    text, condition, dropped = trainer.conditions(batch, skeleton)
    assert not dropped.any() and torch.equal(condition, skeleton) and not torch.allclose(text, trainer.empty_text.expand_as(text))
    trainer.config.condition_dropout = 0.15
    assert abs(float(trainer.dropped(20000).float().mean()) - 0.15) < 0.015  # the paper's 15%

    refiner = refiner_trainer(condition_dropout=1.0)
    text, pooled, maps, dropped = refiner.conditions(batch)
    assert float(text.abs().max()) == 0 and float(pooled.abs().max()) == 0 and float(maps.abs().max()) == 0
    refiner.config.condition_dropout = 0.5
    assert abs(float(refiner.dropped(20000).float().mean()) - 0.5) < 0.02
    big = {k: (v.repeat(20, *[1] * (v.ndim - 1)) if torch.is_tensor(v) else list(v) * 20) for k, v in batch.items()}
    _, _, maps, dropped = refiner.conditions(big)
    assert not torch.equal(dropped["depth"], dropped["normal"]) and not torch.equal(
        dropped["text"], dropped["skeleton"]
    )  # independent draws
    for k, name in ((0, "skeleton"), (3, "depth"), (4, "normal")):  # each map is zero exactly where it was dropped
        present = big[name].flatten(1).amax(1) > 0
        assert torch.equal(maps[:, k].flatten(1).amax(1) == 0, dropped[name] | ~present)


def fixed_loss(trainer, batch) -> float:
    with torch.no_grad():
        return float(trainer.loss(batch, generator=torch.Generator().manual_seed(0)))


@pytest.mark.slow
def test_training_steps_reduce_the_losses(dataset):
    batch = batch_of(dataset)
    trainer = stage1_trainer(rw.hyperhuman_components(seed=1), condition_dropout=0.0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=len(dataset))
    stats = trainer.measure_statistics(loader, 1)
    assert set(stats) == {"rgb", "depth", "normal"} and trainer.unwrapped().config.latent_stats == stats
    # Measured on this one batch, so its depth and normal latents now have the image latents' statistics exactly.
    targets, _ = trainer.latents(batch)
    for k in (1, 2):
        z = targets[k].transpose(0, 1).flatten(1).double()
        torch.testing.assert_close(z.mean(1), torch.tensor(stats["rgb"]["mean"], dtype=torch.float64), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            z.std(1, unbiased=False), torch.tensor(stats["rgb"]["std"], dtype=torch.float64), atol=1e-4, rtol=1e-3
        )
    parts: dict = {}
    trainer.loss(batch, parts=parts)
    assert set(parts) == {"rgb", "depth", "normal"}
    before = fixed_loss(trainer, batch)
    for _ in range(12):
        trainer.step(batch)
    assert fixed_loss(trainer, batch) < 0.8 * before

    refiner = refiner_trainer(condition_dropout=0.0)
    frozen = {k: v.clone() for k, v in refiner.unet.state_dict().items()}
    before = fixed_loss(refiner, batch)
    for _ in range(12):
        refiner.step(batch)
    assert fixed_loss(refiner, batch) < 0.95 * before
    assert all(torch.equal(v, refiner.unet.state_dict()[k]) for k, v in frozen.items())  # SDXL stays frozen


@pytest.mark.slow
def test_the_train_command_writes_weights_the_pipeline_reads(tmp_path, walk, pose, anny):
    from pipelines.hyperhuman.train import main

    data = write_dataset(tmp_path / "data", walk)
    sd2 = rw.save_pipeline_folder(tmp_path / "sd2", rw.sd_components("sd2"), "StableDiffusionPipeline")
    sdxl = rw.save_pipeline_folder(tmp_path / "sdxl", rw.sdxl_components(), "StableDiffusionXLPipeline")
    out = tmp_path / "runs"
    common = ["--data", str(data), "--output", str(out), "--size", "64", "--steps", "3", "--save-every", "2", "--batch-size", "2"]
    assert main(["--stage", "1", "--base", str(sd2), *common]) == 0
    unet_config = json.loads((out / "hyperhuman" / "unet" / "config.json").read_text())
    assert set(unet_config["latent_stats"]) == {"rgb", "depth", "normal"}
    assert HyperHumanPipeline.weights_status(out) == (True, f"stage 1 found in {out / 'hyperhuman'} (no refiner/: stage 1 only)")
    assert main(["--stage", "refiner", "--base", str(sdxl), *common]) == 0
    ok, message = HyperHumanPipeline.weights_status(out)
    assert ok and "refiner found" in message
    pipe = HyperHumanPipeline.load(out, HyperHumanConfig(steps=2, refiner_steps=2))
    assert pipe.image(request(pose, anny)).image.shape == (*SIZE, 3)
    assert main(["--stage", "1", "--base", str(tmp_path / "nowhere"), *common]) == 1


# --- the ControlNet path ----------------------------------------------------------------------------------


def test_control_images_use_the_public_encodings():
    normal = np.zeros((4, 4, 3), np.uint8)
    normal[1:3, 1:3] = (200, 100, 250)
    depth = np.arange(16, dtype=np.uint8).reshape(4, 4)
    skeleton = np.full((4, 4, 3), 7, np.uint8)
    pose_img, depth_img, normal_img = (
        np.asarray(i)
        for i in control_images({"skeleton": skeleton, "depth": depth, "normal": normal}, ["openpose", "depth", "normal"])
    )
    np.testing.assert_array_equal(pose_img, skeleton)
    np.testing.assert_array_equal(depth_img, np.repeat(depth[..., None], 3, axis=2))
    assert tuple(normal_img[1, 1]) == (55, 100, 250) and not normal_img[0, 0].any()  # red mirrored on the body only
    np.testing.assert_array_equal(bae_normal(bae_normal(normal)), normal)


@pytest.mark.slow
def test_controlnet_from_a_local_folder_end_to_end(weights, pose, anny):
    ok, message = ControlNetPipeline.weights_status(weights)
    assert ok and "openpose, depth, normal" in message
    pipe = ControlNetPipeline.load(weights, ControlNetConfig(steps=3))
    assert pipe.names == ["openpose", "depth", "normal"] and not pipe.is_xl
    calls = []
    first = pipe.image(request(pose, anny, on_progress=lambda d, t: calls.append(d)))
    assert first.image.shape == (*SIZE, 3) and first.image.dtype == np.uint8 and set(first.maps) == {"control_normal"}
    assert calls[-1] >= 3
    np.testing.assert_array_equal(first.image, pipe.image(request(pose, anny)).image)
    # A scale of 0 leaves that ControlNet out, and the maps steer the image.
    no_normal = ControlNetPipeline.load(weights, ControlNetConfig(steps=3, normal_scale=0))
    assert no_normal.names == ["openpose", "depth"]
    assert not np.array_equal(no_normal.image(request(pose, anny)).image, first.image)
    with pytest.raises(StudioError, match="scale 0"):
        ControlNetPipeline.load(weights, ControlNetConfig(openpose_scale=0, depth_scale=0, normal_scale=0))


@pytest.mark.slow
def test_controlnet_with_an_sdxl_base(tmp_path, pose, anny):
    rw.write_controlnet_weights(tmp_path, xl=True, names=("openpose", "depth"))
    ok, message = ControlNetPipeline.weights_status(tmp_path)
    assert ok and message.startswith("SDXL base and the openpose, depth")
    pipe = ControlNetPipeline.load(tmp_path / "controlnet", ControlNetConfig(steps=2))
    assert pipe.is_xl and pipe.image(request(pose, anny)).image.shape == (*SIZE, 3)


# --- weights: what is missing, and where it comes from -------------------------------------------------------


def test_missing_weights_name_the_files_and_their_sources(tmp_path, layout):
    tmp_path = tmp_path / "empty"
    tmp_path.mkdir()
    ok, message = HyperHumanPipeline.weights_status(None)
    assert (
        not ok
        and "DIR/hyperhuman/" in message
        and "pipelines/hyperhuman/train.py" in message
        and "stable-diffusion-2-base" in message
    )
    ok, message = HyperHumanPipeline.weights_status(tmp_path)
    assert (
        not ok and "unet/config.json" in message and "vae/diffusion_pytorch_model.safetensors" in message and "\n" not in message
    )
    ok, message = ControlNetPipeline.weights_status(tmp_path)
    assert (
        not ok
        and "base/model_index.json" in message
        and "openpose/config.json" in message
        and "control_v11p_sd15_openpose" in message
    )
    with pytest.raises(StudioError, match="lacks unet/config.json"):
        HyperHumanPipeline.load(tmp_path, HyperHumanConfig())
    # The complete layout, as the pipeline's own folder or under a weights root; a half-present refiner
    # does not stop stage 1, and is named.
    assert HyperHumanPipeline.weights_status(layout)[0] and HyperHumanPipeline.weights_status(layout / "hyperhuman")[0]
    assert ControlNetPipeline.weights_status(layout) == (
        True,
        f"SD 1.5-style base and the openpose, depth, normal ControlNet(s) found in {layout / 'controlnet'}",
    )
    (layout / "hyperhuman" / "refiner" / "base" / "text_encoder_2" / "config.json").unlink()
    ok, message = HyperHumanPipeline.weights_status(layout)
    assert ok and "refiner is incomplete" in message and "refiner/base/text_encoder_2/config.json" in message


@pytest.mark.slow
def test_a_wrong_tensor_is_one_line_naming_the_folder(tmp_path, weights):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(weights / "hyperhuman", broken / "hyperhuman")
    config_file = broken / "hyperhuman" / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["unet"]["block_out_channels"] = [48, 64]
    config_file.write_text(json.dumps(config))
    with pytest.raises(StudioError) as error:
        HyperHumanPipeline.load(broken, HyperHumanConfig(refine=False))
    message = str(error.value)
    assert "\n" not in message and str(broken / "hyperhuman" / "unet") in message and "train.py" in message


# --- the job, the CLI and the web demo ------------------------------------------------------------------------


@pytest.mark.slow
def test_run_image_job_writes_the_image_and_the_maps(tmp_path, weights):
    from studio.media import read_image
    from studio.tasks import TaskOptions, run_image

    options = TaskOptions(backend="hyperhuman", weights=str(weights), settings=("steps=2", "refine=false"), seed=3)
    out = run_image(tmp_path / "out.png", prompt="  ", pose=WALK, frame=5, size=100, options=options, maps_out=tmp_path / "maps")
    assert out.backend == "hyperhuman" and read_image(tmp_path / "out.png").shape == (128, 64, 3)
    names = {p.stem for p in (tmp_path / "maps").glob("*.png")}
    assert {"depth", "normal", "pose_skeleton", "pose_depth", "pose_normal"} <= names
    assert any("no prompt" in n for n in out.notes) and any("rounded to 128x64" in n for n in out.notes)
    settings = json.loads(out.settings_path.read_text())
    assert settings["settings"]["steps"] == 2 and settings["options"]["seed"] == 3


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, layout):
    from studio.tasks import TaskOptions, run_image

    target = tmp_path / "out.png"
    with pytest.raises(StudioError, match=r"has 60 frames; choose one with --frame 0\.\.59"):
        run_image(target, prompt="x", pose=WALK, options=TaskOptions(backend="controlnet", weights=str(layout)))
    with pytest.raises(StudioError) as error:
        run_image(
            target, prompt="x", pose=WALK, frame=0, options=TaskOptions(backend="hyperhuman", weights=str(tmp_path / "empty"))
        )
    assert "no such folder" in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudioError) as error:
        run_image(
            target, prompt="x", pose=WALK, frame=0, options=TaskOptions(backend="controlnet", weights=str(tmp_path / "empty"))
        )
    assert "base/model_index.json" in str(error.value) and "\n" not in str(error.value)
    assert not any(tmp_path.glob("out*"))


def test_auto_skips_gpu_pipelines_without_a_gpu(layout, monkeypatch):
    from studio import registry

    weights = layout
    status = registry.pipeline_status(HyperHumanPipeline, weights)
    assert status.weights_ok and status.needs_gpu
    monkeypatch.setattr(registry, "has_cuda", lambda: False)
    assert "hyperhuman" not in registry.practical_pipelines("image", weights)
    monkeypatch.setattr(registry, "has_cuda", lambda: True)
    assert {"hyperhuman", "controlnet"} <= set(registry.practical_pipelines("image", weights))


@pytest.mark.slow
def test_web_demo_image_job(tmp_path, weights, monkeypatch):
    """The Image tab's job with tiny weights, as if a GPU were present (the tab offers only what is practical)."""
    import types

    sys.path.insert(0, str(ROOT))
    import gradio_app

    from studio import registry

    monkeypatch.setattr(registry, "has_cuda", lambda: True)
    monkeypatch.setattr(gradio_app, "WORK", tmp_path / "work")
    monkeypatch.setenv("STUDIO_WEIGHTS", str(weights))
    session = types.SimpleNamespace(session_hash="hyperhuman-test")
    image, gallery, notes = gradio_app.run_image_job(
        "a person",
        str(WALK),
        2,
        128,
        "hyperhuman",
        session,
        progress=lambda *a, **k: None,
        settings={"steps": "2", "refiner_steps": "2"},
    )
    assert Path(image).is_file() and Path(image).is_relative_to(tmp_path / "work")
    assert {"depth", "normal", "stage1", "pose_skeleton"} <= {name for _, name in gallery}
    assert "backend: hyperhuman" in notes


@pytest.mark.slow
def test_studio_image_command(tmp_path, weights):
    cmd = [
        str(ROOT / ".venv" / "bin" / "studio"), "image", "--prompt", "a person walking", "--pose", str(WALK), "--frame", "7", "-o", str(tmp_path / "img.png"),
        "--backend", "controlnet", "--weights", str(weights), "--size", "128", "--set", "steps=2", "--seed", "1", "--maps-out", str(tmp_path / "maps"),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "img.png").is_file() and (tmp_path / "maps" / "control_normal.png").is_file()
    missing = subprocess.run([*cmd[:-4], "--weights", str(tmp_path / "nothing")], capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr and "no such folder" in missing.stderr + missing.stdout


# --- the shared contract -----------------------------------------------------------------------------------


class TestHyperHumanContract(PipelineContract):
    @pytest.fixture
    def contract(self, stage1, pose, anny):
        def make_pipeline(config):
            return HyperHumanPipeline(**stage1, config=dataclasses.replace(config, steps=3))

        def make_request(task, *, seed=0, **fields):
            return dataclasses.replace(request(pose, anny, seed=seed), **fields)

        return ContractCase(HyperHumanPipeline, make_pipeline, make_request)


@pytest.mark.slow
class TestControlNetContract(PipelineContract):
    @pytest.fixture
    def contract(self, weights, pose, anny):
        def make_pipeline(config):
            return ControlNetPipeline.load(weights, dataclasses.replace(config, steps=3))

        def make_request(task, *, seed=0, **fields):
            return dataclasses.replace(request(pose, anny, seed=seed), **fields)

        return ContractCase(ControlNetPipeline, make_pipeline, make_request)


def test_settings_are_checked():
    with pytest.raises(StudioError, match="steps must be 1-1000"):
        make_config(HyperHumanPipeline, ["steps=0"])
    with pytest.raises(StudioError, match="stage1_size must be a multiple of 64"):
        make_config(HyperHumanPipeline, ["stage1_size=500"])
    with pytest.raises(StudioError, match="depth_scale must be 0-5"):
        make_config(ControlNetPipeline, ["depth_scale=9"])
