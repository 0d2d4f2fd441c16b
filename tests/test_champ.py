"""Champ: tiny random components end to end, the official checkpoint layout, full-size key sets, training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ASSETS, ROOT
from pipeline_contract import ContractCase, PipelineContract

from pipelines.champ import (
    ChampConfig,
    ChampModelConfig,
    ChampPipeline,
    GuidanceEncoder,
    MotionModuleConfig,
    VideoUNet,
    build_networks,
    build_unet,
    context_windows,
)
from pipelines.champ.pipeline import make_scheduler, padded_canvas
from pipelines.champ.weights import CHECKPOINTS, GUIDANCE_TYPES, save_checkpoints
from studio.condition import HumanCondition
from studio.errors import StudioError

OFFICIAL_KEYS = ROOT.parent / "shared" / "champ_official_keys"


def tiny_model_config() -> ChampModelConfig:
    unet = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": 16,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
    }
    return ChampModelConfig(
        unet=unet, motion=MotionModuleConfig(num_heads=2, max_frames=8, norm_num_groups=8), guidance_channels=(4, 8, 8, 16), guidance_heads=2,
        guidance_norm_groups=4,
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
    )


def tiny_image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1, image_size=32, patch_size=8, projection_dim=16)
    return CLIPVisionModelWithProjection(config)


def tiny_modules(config: ChampModelConfig, *, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    reference, denoising, encoders = build_networks(config)
    modules = {"reference_unet": reference, "denoising_unet": denoising, **{f"guidance_encoder_{g}": e for g, e in encoders.items()}}
    for name, module in modules.items():  # zero-initialised outputs would hide wiring mistakes
        for key, p in module.named_parameters():
            if p.abs().sum() == 0 and key.endswith("weight"):
                torch.nn.init.normal_(p, std=0.02)
    return modules


def tiny_pipeline(seed: int = 0) -> ChampPipeline:
    config = tiny_model_config()
    m = tiny_modules(config, seed=seed)
    encoders = {g: m[f"guidance_encoder_{g}"] for g in GUIDANCE_TYPES}
    return ChampPipeline(
        vae=tiny_vae(), image_encoder=tiny_image_encoder(), reference_unet=m["reference_unet"], denoising_unet=m["denoising_unet"],
        guidance_encoders=encoders, scheduler=make_scheduler(),
    )


def write_official_layout(folder: Path, config: ChampModelConfig, *, seed: int = 0) -> dict:
    """The release's tree, from tiny random modules: champ/*.pth (official key names), VAE, CLIP."""
    modules = tiny_modules(config, seed=seed)
    (folder / "champ").mkdir(parents=True)
    states = {}
    for name, module in modules.items():
        state = (module.unet if name == "denoising_unet" else module).state_dict()
        if name == "denoising_unet":
            states["motion_module"] = {k: v for k, v in state.items() if "motion_modules" in k}
            state = {k: v for k, v in state.items() if "motion_modules" not in k}
        states[name] = state
    for name, state in states.items():
        torch.save(state, folder / "champ" / f"{name}.pth")
    (folder / "champ" / "model_config.json").write_text(config.to_json())
    tiny_vae().save_pretrained(folder / "sd-vae-ft-mse")
    tiny_image_encoder().save_pretrained(folder / "image_encoder")
    return states


@pytest.fixture(scope="module")
def walk6() -> HumanCondition:
    return HumanCondition.load(ASSETS / "motions" / "walk.npz")[:6]


# Champ's default context schedule ("uniform", 24 frames, stride 1, overlap 4, closed loop), as its
# pipeline computes it: the frame indices of each window, in order.
OFFICIAL_WINDOWS = {
    8: [range(0, 8)],
    24: [range(0, 24)],
    25: [range(0, 24), [*range(20, 25), *range(0, 19)]],
    30: [range(0, 24), [*range(20, 30), *range(0, 14)]],
    44: [range(0, 24), range(20, 44), [*range(40, 44), *range(0, 20)]],
    50: [range(0, 24), range(20, 44), [*range(40, 50), *range(0, 14)]],
    72: [range(0, 24), range(20, 44), range(40, 64), [*range(60, 72), *range(0, 12)]],
    100: [range(0, 24), range(20, 44), range(40, 64), range(60, 84), [*range(80, 100), *range(0, 4)]],
}


@pytest.mark.parametrize("num_frames", sorted(OFFICIAL_WINDOWS))
def test_context_windows_are_champs_closed_loop_schedule(num_frames):
    config = ChampConfig()
    assert context_windows(num_frames, config.context_frames, config.context_overlap) == [list(w) for w in OFFICIAL_WINDOWS[num_frames]]


def test_context_windows_wrap_with_other_sizes():
    assert context_windows(6, 4, 2) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 0, 1]]
    assert context_windows(3, 24, 4) == [[0, 1, 2]]
    assert padded_canvas(512, 288) == (512, 320, 0, 16)


def test_scheduler_is_champs():
    s = make_scheduler()
    s.set_timesteps(20)
    assert s.config.prediction_type == "v_prediction" and s.config.rescale_betas_zero_snr
    assert int(s.timesteps[0]) == 999  # trailing spacing starts at the last training step
    assert float(s.alphas_cumprod[-1]) < 1e-6  # zero terminal SNR


def test_pipeline_runs_end_to_end_in_windows(walk6, anny):
    pipe = tiny_pipeline()
    ref = (np.random.default_rng(0).random((90, 60, 3)) * 255).astype(np.uint8)
    calls = []
    config = ChampConfig(steps=2, context_frames=4, context_overlap=2)
    out = pipe(ref, walk6, height=64, width=40, config=config, seed=3, body_model=anny, callback=lambda done, total: calls.append((done, total)))
    assert out.frames.shape == (6, 64, 40, 3) and out.frames.dtype == np.uint8
    assert calls[-1] == (6, 6)  # 2 steps x 3 windows ([0-3], [2-5], [4, 5, 0, 1])
    again = pipe(ref, walk6, height=64, width=40, config=config, seed=3, body_model=anny).frames
    np.testing.assert_array_equal(out.frames, again)  # seeded
    other = pipe(ref, walk6, height=64, width=40, config=config, seed=4, body_model=anny).frames
    assert not np.array_equal(out.frames, other)


def test_pipeline_resumes_from_the_saved_step(walk6, anny, tmp_path):
    pipe = tiny_pipeline()
    ref = np.full((64, 40, 3), 128, np.uint8)
    config = ChampConfig(steps=3, context_frames=4, context_overlap=2)
    full = pipe(ref, walk6, config=config, height=64, width=40, body_model=anny, checkpoint_dir=tmp_path).frames
    state = torch.load(tmp_path / "champ_latents.pt", weights_only=True)
    assert state["step"] == 3
    calls = []
    resumed = pipe(ref, walk6, config=config, height=64, width=40, body_model=anny, checkpoint_dir=tmp_path, callback=lambda d, t: calls.append(d))
    assert calls == []  # nothing left to denoise
    np.testing.assert_array_equal(full, resumed.frames)


def test_reference_attention_changes_the_prediction(walk6):
    """The denoising UNet must attend to the reference features: different references, different outputs."""
    pipe = tiny_pipeline()
    unet, ref_unet = pipe.denoising_unet, pipe.reference_unet
    tokens = torch.randn(1, 1, 16)
    x = torch.randn(1, 4, 3, 8, 8)
    outs = []
    for seed in (0, 1):
        pipe.reference_bank.clear()
        ref_unet(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed)), torch.zeros(1), tokens, return_dict=False)
        assert pipe.reference_bank.features  # every self-attention layer wrote
        outs.append(unet(x, torch.tensor(500), tokens))
    assert outs[0].shape == x.shape
    assert not torch.allclose(outs[0], outs[1])


def test_unconditional_prediction_ignores_the_reference(walk6, anny):
    """As in Champ, only the conditional half of a guided batch reads the reference features."""
    pipe = tiny_pipeline()
    outputs = []
    pipe.denoising_unet.register_forward_hook(lambda _module, _args, out: outputs.append(out.clone()))
    config = ChampConfig(steps=1, context_frames=8)
    rng = np.random.default_rng(0)
    for _ in range(2):
        reference = (rng.random((64, 40, 3)) * 255).astype(np.uint8)
        pipe(reference, walk6, height=64, width=40, config=config, body_model=anny)
    first, second = outputs  # one window, one step each: [2 (uncond, cond), 4, 6, 8, 5]
    torch.testing.assert_close(first[0], second[0])
    assert not torch.allclose(first[1], second[1], atol=1e-4)


def test_clip_input_is_the_whole_reference_squashed():
    """Champ resizes the whole reference to CLIP's square (a portrait is squashed, not cropped), then
    normalises it (transformers' CLIPImageProcessor at its defaults, on the resized image)."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    from pipelines.champ.pipeline import clip_pixels

    rng = np.random.default_rng(0)
    portrait = (rng.random((300, 120, 3)) * 255).astype(np.uint8)
    portrait[:100] //= 4  # a dark top third: cropping it away would change the pixels a lot
    squashed = Image.fromarray(portrait).resize((224, 224))
    expected = torch.as_tensor(np.asarray(CLIPImageProcessor()(squashed, return_tensors="np").pixel_values))
    pixels = clip_pixels(portrait, 224)
    assert pixels.shape == (1, 3, 224, 224)
    torch.testing.assert_close(pixels, expected, rtol=0, atol=1e-5)


def test_motion_modules_mix_frames_and_start_as_identity():
    config = tiny_model_config()
    torch.manual_seed(0)
    plain = VideoUNet(build_unet(config.unet))
    video = VideoUNet(build_unet(config.unet))
    video.unet.load_state_dict(plain.unet.state_dict())
    video.add_motion_modules(config.motion)
    x, t, tokens = torch.randn(1, 4, 3, 8, 8), torch.tensor(10), torch.randn(1, 1, 16)
    torch.testing.assert_close(video(x, t, tokens), plain(x, t, tokens))  # zero-initialised proj_out
    for p in video.motion_parameters():
        torch.nn.init.normal_(p, std=0.05)
    y = x.clone()
    y[:, :, 0] += 1.0  # change only frame 0
    changed = (video(y, t, tokens) - video(x, t, tokens)).abs().amax(dim=(0, 1, 3, 4))
    assert changed[1:].min() > 0  # other frames see it through the temporal attention
    changed_plain = (plain(y, t, tokens) - plain(x, t, tokens)).abs().amax(dim=(0, 1, 3, 4))
    assert changed_plain[1:].max() == 0  # without motion modules, frames are independent


def test_guidance_encoder_reaches_latent_resolution():
    encoder = GuidanceEncoder(32, block_out_channels=(4, 8, 8, 16), num_heads=2, norm_num_groups=4)
    out = encoder(torch.rand(2, 3, 5, 64, 48))
    assert out.shape == (2, 32, 5, 8, 6)
    assert out.abs().max() == 0  # conv_out starts at zero, so a new encoder leaves the UNet unchanged


def test_guidance_encoder_norms_use_champs_groups():
    """The encoder's forward uses its last transformer block, which Champ normalises over 32 groups."""
    with torch.device("meta"):
        encoder = build_networks(ChampModelConfig())[2]["depth"]
    assert [a.norm.num_groups for a in encoder.attentions] == [1, 32, 1, 32, 1, 32]
    assert encoder.attentions[-1].norm.num_groups == 32
    with pytest.raises(ValueError, match="guidance_norm_groups=32 does not divide"):
        ChampModelConfig(guidance_channels=(4, 8, 8, 16))


def test_official_layout_loads_strictly(tmp_path):
    config = tiny_model_config()
    states = write_official_layout(tmp_path, config, seed=1)
    assert ChampPipeline.weights_status(tmp_path)[0]
    pipe = ChampPipeline.from_pretrained(tmp_path, device="cpu")
    loaded = pipe.denoising_unet.unet.state_dict()
    for key in ("conv_in.weight", "down_blocks.0.motion_modules.0.temporal_transformer.proj_out.weight"):
        source = states["motion_module" if "motion_modules" in key else "denoising_unet"]
        torch.testing.assert_close(loaded[key], source[key])
    torch.testing.assert_close(pipe.guidance_encoders["dwpose"].conv_in.weight, states["guidance_encoder_dwpose"]["conv_in.weight"])
    # A root that holds several pipelines' folders: DIR/champ/champ/...
    nested = tmp_path / "root"
    nested.mkdir()
    (tmp_path / "champ").rename(tmp_path / "champ_files")
    (nested / "champ").mkdir()
    for item in ("champ_files", "sd-vae-ft-mse", "image_encoder"):
        (tmp_path / item).rename(nested / "champ" / ("champ" if item == "champ_files" else item))
    assert ChampPipeline.weights_status(nested)[0]


def test_missing_files_are_named(tmp_path):
    ok, message = ChampPipeline.weights_status(None)
    assert not ok and "--weights" in message
    write_official_layout(tmp_path, tiny_model_config())
    (tmp_path / "champ" / "motion_module.pth").unlink()
    (tmp_path / "image_encoder" / "config.json").unlink()
    ok, message = ChampPipeline.weights_status(tmp_path)
    assert not ok and "champ/motion_module.pth" in message and "image_encoder/config.json" in message
    assert "huggingface.co/fudan-generative-ai/champ" in message
    with pytest.raises(StudioError, match="motion_module.pth"):
        ChampPipeline.from_pretrained(tmp_path, device="cpu")


def test_wrong_shapes_and_keys_name_the_tensor(tmp_path):
    write_official_layout(tmp_path, tiny_model_config())
    path = tmp_path / "champ" / "guidance_encoder_normal.pth"
    state = torch.load(path, weights_only=True)
    state["conv_out.weight"] = torch.zeros(7, 16, 3, 3)
    torch.save(state, path)
    with pytest.raises(StudioError, match=r"guidance_encoder_normal.pth: tensor 'conv_out.weight' has shape \[7, 16, 3, 3\], expected \[32, 16, 3, 3\]"):
        ChampPipeline.from_pretrained(tmp_path, device="cpu")
    state["conv_out.weight"] = torch.zeros(32, 16, 3, 3)
    torch.save(state, path)
    unet_path = tmp_path / "champ" / "denoising_unet.pth"
    unet = torch.load(unet_path, weights_only=True)
    del unet["conv_in.bias"]
    torch.save(unet, unet_path)
    with pytest.raises(StudioError, match=r"denoising_unet.pth: tensor 'conv_in.bias' is missing"):
        ChampPipeline.from_pretrained(tmp_path, device="cpu")
    (tmp_path / "champ" / "reference_unet.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(StudioError, match="reference_unet.pth: not a readable checkpoint"):
        ChampPipeline.from_pretrained(tmp_path, device="cpu")


def test_training_script_guidance_encoders_load_without_their_unused_block(tmp_path, caplog):
    """Files saved by Champ's training scripts hold 19 extra ``guidance_attention.*`` tensors: dropped
    with one logged line; any other extra tensor is still refused."""
    from pipelines.champ.weights import load_champ_files

    config = tiny_model_config()
    states = write_official_layout(tmp_path, config)
    path = tmp_path / "champ" / "guidance_encoder_depth.pth"
    released = states["guidance_encoder_depth"]
    last = "attentions.5."  # the last transformer block, which guidance_attention has the layout of
    extra = {"guidance_attention." + k[len(last) :]: torch.randn_like(v) for k, v in released.items() if k.startswith(last)}
    assert len(extra) == 19
    torch.save({**released, **extra}, path)
    with torch.device("meta"):
        reference, denoising, encoders = build_networks(config)
    with caplog.at_level("INFO", logger="pipelines.champ.weights"):
        load_champ_files(tmp_path, reference, denoising, encoders)
    lines = [r.getMessage() for r in caplog.records if "guidance_attention" in r.getMessage()]
    assert len(lines) == 1 and "guidance_encoder_depth.pth" in lines[0] and "19" in lines[0]
    torch.testing.assert_close(encoders["depth"].attentions[5].proj_in.weight, released["attentions.5.proj_in.weight"])
    for other in ("guidance_attention.transformer_blocks.1.attn1.to_q.weight", "mask_head.weight"):
        torch.save({**released, **extra, other: torch.zeros(4)}, path)
        with torch.device("meta"):
            reference, denoising, encoders = build_networks(config)
        with pytest.raises(StudioError, match=rf"guidance_encoder_depth.pth: unexpected tensor '{other}'"):
            load_champ_files(tmp_path, reference, denoising, encoders)


def _shapes(module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_full_size_modules_have_the_official_keys_and_shapes():
    """At full size on the meta device (no memory): the state dicts equal the released files' key sets."""
    official = {name: json.loads((OFFICIAL_KEYS / f"{name}.json").read_text()) for name in ("denoising_unet", "reference_unet", "motion_module", "guidance_encoder")}
    with torch.device("meta"):
        reference, denoising, encoders = build_networks(ChampModelConfig())
    encoder = encoders["depth"]
    unet = _shapes(denoising.unet)
    assert {k: v for k, v in unet.items() if "motion_modules" not in k} == official["denoising_unet"]
    assert {k: v for k, v in unet.items() if "motion_modules" in k} == official["motion_module"]
    assert _shapes(reference) == official["reference_unet"]
    assert _shapes(encoder) == official["guidance_encoder"]
    assert len(CHECKPOINTS) == 7


def test_saved_checkpoints_load_back(tmp_path):
    """train.py's output (safetensors in the official layout) is what from_pretrained reads."""
    config = tiny_model_config()
    modules = tiny_modules(config, seed=2)
    save_checkpoints(tmp_path, modules, config)
    tiny_vae().save_pretrained(tmp_path / "sd-vae-ft-mse")
    tiny_image_encoder().save_pretrained(tmp_path / "image_encoder")
    assert sorted(p.name for p in (tmp_path / "champ").glob("*.safetensors")) == sorted(f"{n}.safetensors" for n in CHECKPOINTS)
    pipe = ChampPipeline.from_pretrained(tmp_path, device="cpu")
    torch.testing.assert_close(pipe.reference_unet.conv_in.weight, modules["reference_unet"].conv_in.weight)


def tiny_batch(frames: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "target": torch.rand(1, 3, frames, 64, 64, generator=g) * 2 - 1,
        "reference": torch.rand(1, 3, 64, 64, generator=g) * 2 - 1,
        "clip": torch.randn(1, 3, 32, 32, generator=g),
        "guidance": torch.rand(1, 12, frames, 64, 64, generator=g),
    }


def tiny_trainer(stage: int, *, lr: float = 2e-3, checkpointing: bool = False):
    from pipelines.champ.train import ChampTrainer, ChampTrainingModel, TrainConfig

    config = tiny_model_config()
    m = tiny_modules(config)
    denoising = VideoUNet(build_unet(config.unet))  # stage 1: no motion modules
    denoising.unet.load_state_dict(m["denoising_unet"].unet.state_dict(), strict=False)
    model = ChampTrainingModel(m["reference_unet"], denoising, {g: m[f"guidance_encoder_{g}"] for g in GUIDANCE_TYPES})
    train_config = TrainConfig(stage=stage, learning_rate=lr, uncond_probability=0.0, gradient_checkpointing=checkpointing)
    return ChampTrainer(vae=tiny_vae(), image_encoder=tiny_image_encoder(), model=model, config=train_config, model_config=config)


@pytest.mark.slow
@pytest.mark.parametrize("stage, frames", [(1, 1), (2, 4)])
def test_training_steps_reduce_the_loss(stage, frames):
    trainer = tiny_trainer(stage)
    batch = tiny_batch(frames)
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    same_noise = lambda: torch.Generator().manual_seed(7)  # noqa: E731 - the same noise and timestep each step: an overfit
    losses = [trainer.step(batch, generator=same_noise()) for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses
    names = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    if stage == 2:
        assert names and all("motion_modules" in n for n in names)
    else:
        assert not any("motion_modules" in n for n in names) and any(n.startswith("guidance_encoders") for n in names)
    for n, p in trainer.model.named_parameters():
        if n in frozen:
            torch.testing.assert_close(p, frozen[n])  # frozen networks do not move


def test_training_drops_the_reference_for_unconditional_samples():
    """As Champ's training scripts do: unconditional samples get zeroed CLIP pixels, the reference UNet
    skips them and their self-attention reads no reference features."""
    trainer = tiny_trainer(1)
    model = trainer.model
    reference_batches, clip_inputs = [], []
    model.reference_unet.register_forward_pre_hook(lambda _module, args: reference_batches.append(args[0].shape[0]))
    trainer.image_encoder.register_forward_pre_hook(lambda _module, args: clip_inputs.append(args[0].clone()))
    g = torch.Generator().manual_seed(0)
    noisy, t = torch.randn(2, 4, 1, 8, 8, generator=g), torch.tensor([500, 500])
    tokens, maps = torch.randn(2, 1, 16, generator=g), torch.rand(2, 12, 1, 64, 64, generator=g)
    with torch.no_grad():
        outs = [model(noisy, t, torch.randn(2, 4, 8, 8, generator=g), tokens, maps, conditional=torch.tensor([False, True])) for _ in range(2)]
    assert reference_batches == [1, 1]  # the conditional sample only
    torch.testing.assert_close(outs[0][0], outs[1][0])  # the unconditional sample ignores the reference
    assert not torch.allclose(outs[0][1], outs[1][1], atol=1e-4)
    trainer.config.uncond_probability = 1.0
    reference_batches.clear()
    trainer.loss(tiny_batch(1))
    assert reference_batches == [] and clip_inputs[-1].abs().max() == 0


def test_gradient_checkpointing_gives_the_same_gradients():
    """Motion modules hang on hooks; checkpointed blocks re-run them in the backward pass with the clip's frames."""
    grads = []
    for checkpointing in (False, True):
        trainer = tiny_trainer(2, checkpointing=checkpointing)
        trainer.model.train()
        for p in trainer.model.denoising_unet.motion_parameters():
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(p.numel()))
        loss = trainer.loss(tiny_batch(4), generator=torch.Generator().manual_seed(1))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.denoising_unet.motion_parameters()]))
    assert trainer.model.denoising_unet.unet.is_gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def write_clip(folder: Path, condition: HumanCondition) -> None:
    from studio.media import write_image

    (folder / "frames").mkdir(parents=True)
    h, w = condition.camera.image_size
    for i in range(condition.num_frames):
        write_image(folder / "frames" / f"{i:05d}.png", np.full((h, w, 3), 20 * i, np.uint8))
    condition.save(folder / "condition.npz")


def test_train_script_runs_stage_2_and_its_output_loads(tmp_path, walk6, anny):
    from pipelines.champ.train import ClipDataset, main

    weights = tmp_path / "weights"
    write_official_layout(weights, tiny_model_config())
    (weights / "champ" / "motion_module.pth").unlink()  # as after stage 1: no motion modules yet
    write_clip(tmp_path / "data" / "walk", walk6)
    sample = ClipDataset(tmp_path / "data", size=(64, 48), frames=4, clip_size=32, body_model=anny)[0]
    assert sample["target"].shape == (3, 4, 64, 48) and sample["guidance"].shape == (12, 4, 64, 48)
    assert sample["guidance"].amax() > 0  # the body is drawn into the crop
    out = tmp_path / "run"
    code = main(["--stage", "2", "--data", str(tmp_path / "data"), "--weights", str(weights), "--init", str(weights), "--output", str(out),
                 "--steps", "2", "--size", "64", "48", "--frames", "4", "--save-every", "1"])
    assert code == 0
    assert (out / "champ" / "motion_module.safetensors").is_file()
    for sub in ("sd-vae-ft-mse", "image_encoder"):
        (weights / sub).rename(out / sub)
    pipe = ChampPipeline.from_pretrained(out, device="cpu")
    assert pipe.denoising_unet.motion_config is not None


def test_train_script_reports_bad_data_in_one_line(tmp_path, capsys):
    from pipelines.champ.train import main

    weights = tmp_path / "weights"
    write_official_layout(weights, tiny_model_config())
    (tmp_path / "data").mkdir()
    capsys.readouterr()
    assert main(["--stage", "1", "--data", str(tmp_path / "data"), "--weights", str(weights), "--init", str(weights), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no usable clips" in err and "\n" not in err


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("champ_weights")
    write_official_layout(folder, tiny_model_config())
    return folder


def test_auto_backend_needs_a_gpu_for_champ(tiny_weights, monkeypatch):
    from studio.registry import resolve

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cls, reason = resolve("animate", "auto", str(tiny_weights))
    assert cls.name == "mesh" and "champ weights found but no CUDA GPU" in reason
    assert resolve("animate", "champ", str(tiny_weights))[0].name == "champ"  # asked for: runs anyway
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve("animate", "auto", str(tiny_weights))[0].name == "champ"


@pytest.mark.slow
def test_studio_animate_with_the_champ_backend(tiny_weights, walk6, anny, tmp_path):
    """The CLI path end to end with tiny weights: the video has every frame at the requested size."""
    from test_cli import studio

    from studio.media import read_video_frames

    motion = tmp_path / "walk6.npz"
    walk6.save(motion, body_model=anny)
    out = tmp_path / "champ.mp4"
    r = studio("animate", ASSETS / "media" / "ref_sitting.jpg", motion, "-o", out, "--backend", "champ", "--weights", tiny_weights,
               "--set", "steps=2", "--size", "128")
    assert r.returncode == 0, r.stderr
    assert "backend: champ" in r.stderr and "Traceback" not in r.stderr
    frames = np.stack(list(read_video_frames(out)))
    assert frames.shape == (6, 86, 128, 3)  # ref_sitting's aspect at 128 px
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["backend"] == "champ" and settings["config"]["settings"]["steps"] == 2
    assert not out.with_name(out.name + ".partial").exists()


class TestChampContract(PipelineContract):
    """The shared pipeline contract, on tiny random networks."""

    @pytest.fixture
    def contract(self, walk6, anny):
        from studio.pipeline import AnimateRequest

        def make_pipeline(config):
            pipe = tiny_pipeline()
            pipe.config = dataclasses.replace(config, steps=2, context_frames=4, context_overlap=2)
            return pipe

        reference = (np.random.default_rng(0).random((90, 60, 3)) * 255).astype(np.uint8)
        motion = dataclasses.replace(walk6, camera=walk6.camera.resized((64, 40)))

        def make_request(task, *, seed=0, **fields):
            base = dict(reference=reference, reference_mask=None, reference_condition=None, motion=motion, size=(64, 40), body_model=anny, seed=seed)
            return AnimateRequest(**{**base, **fields})

        return ContractCase(ChampPipeline, make_pipeline, make_request, resumable=True)
