"""SHERF: the official parameter tree, safe loading of synthetic files in the official container, the
StyleGAN layers, the body-model requirement, the shared contract, training and `studio novel-view`."""

from __future__ import annotations

import dataclasses
import json
import pickle
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

from pipelines.sherf import SherfConfig, SherfGenerator, SherfModelConfig, SherfPipeline
from pipelines.sherf.model import MODEL_SIZES, lowpass_filter, modulated_conv2d, upfirdn2d, upsample2d
from pipelines.sherf.weights import CONFIG_FILE
from studio.camera import Camera
from studio.errors import StudioError
from studio.pipeline import AnimateRequest, NovelViewRequest, make_config

OFFICIAL_KEYS = ROOT.parent / "shared" / "sherf_official_keys"
TINY = MODEL_SIZES["tiny"]


def tiny_generator(seed: int = 0, config: SherfModelConfig = TINY) -> SherfGenerator:
    torch.manual_seed(seed)
    generator = SherfGenerator(config)
    with torch.no_grad():
        for name, p in generator.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return generator


# --- a synthetic file in the official container ----------------------------------------------------

# How the official pickle names each module: EG3D's "persistent" classes (rebuilt from source text
# embedded in the file), and classes pickled by import path.
PERSISTENT = {
    "SherfGenerator": "training.triplane.TriPlaneGenerator", "TriplaneBackbone": "training.networks_stylegan2.Generator",
    "MappingNetwork": "training.networks_stylegan2.MappingNetwork", "SynthesisNetwork": "training.networks_stylegan2.SynthesisNetwork",
    "SynthesisBlock": "training.networks_stylegan2.SynthesisBlock", "SynthesisLayer": "training.networks_stylegan2.SynthesisLayer",
    "ToRGBLayer": "training.networks_stylegan2.ToRGBLayer", "FullyConnectedLayer": "training.networks_stylegan2.FullyConnectedLayer",
    "SuperResolution": "training.superresolution.SuperresolutionHybrid8XDC",
}  # fmt: skip
BY_PATH = {
    "ResNetEncoder": "training.triplane.ResNet18Classifier", "ResNet18": "torchvision.models.resnet.ResNet",
    "BasicBlock": "torchvision.models.resnet.BasicBlock", "RendererModules": "training.volumetric_rendering.renderer.ImportanceRenderer",
    "SparseConvNet": "training.volumetric_rendering.renderer.SparseConvNet", "SparseSequential": "spconv.pytorch.modules.SparseSequential",
    "SparseConv3d": "spconv.pytorch.conv.SubMConv3d", "PositionalEncoding": "training.volumetric_rendering.renderer.PositionalEncoding",
    "TokenTransformer": "training.volumetric_rendering.renderer.Transformer", "PreNormResidual": "training.volumetric_rendering.renderer.Residual",
    "_PreNorm": "training.volumetric_rendering.renderer.PreNorm", "TokenAttention": "training.volumetric_rendering.renderer.Attention",
    "FeedForward": "training.volumetric_rendering.renderer.FeedForward", "NeRFDecoder": "training.triplane.NeRFDecoder",
    "SherfModelConfig": "dnnlib.util.EasyDict",
}  # fmt: skip


def _module(name: str) -> types.ModuleType:
    if name not in sys.modules:
        sys.modules[name] = types.ModuleType(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_module(parent), child, sys.modules[name])
    return sys.modules[name]


def _global(path: str, obj=None):
    """A class (or ``obj``) importable as ``path`` while the test writes its pickle."""
    module, _, name = path.rpartition(".")
    if obj is None:
        obj = getattr(_module(module), name, None) or type(name, (), {"__module__": module, "__qualname__": name})
    obj.__module__, obj.__qualname__ = module, name
    setattr(_module(module), name, obj)
    return obj


def _reconstruct_persistent_obj(meta):  # what EG3D's torch_utils.persistence would run; never called by studio
    raise AssertionError("the embedded source must not be executed")


class OfficialPickler(pickle.Pickler):
    """Writes modules the way SHERF's network pickles hold them."""

    def __init__(self, file, *, source: str) -> None:
        super().__init__(file, protocol=4)
        self.source = source
        self.reconstruct = _global("torch_utils.persistence._reconstruct_persistent_obj", _reconstruct_persistent_obj)

    def reducer_override(self, obj):
        name = type(obj).__name__
        if name in PERSISTENT and isinstance(obj, torch.nn.Module):
            meta = {"type": "class", "version": 6, "module_src": self.source, "class_name": PERSISTENT[name], "state": dict(obj.__dict__)}
            return (self.reconstruct, (meta,))
        if name in BY_PATH:
            return (_global(BY_PATH[name]), (), dict(obj.__dict__))
        return NotImplemented


def write_official_pickle(folder: Path, generator: SherfGenerator, *, name: str = "SHERF_THuman.pkl", harmful: Path | None = None, sentinel: Path | None = None) -> Path:
    """A network pickle in SHERF's container ({'training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe'}),
    with source text that would create ``sentinel`` if anything ran it; ``harmful`` adds a __reduce__
    that would create that file. A model_config.json beside it gives the (tiny) sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    sentinel = sentinel or folder / "source_ran"
    before = set(sys.modules)
    kwargs = _global("dnnlib.util.EasyDict", type("EasyDict", (dict,), {}))(class_name="training.RenderPeople_dataset.RenderPeopleDatasetBatch", data_root="data/x")
    container = {"training_set_kwargs": kwargs, "G": generator, "D": torch.nn.Linear(2, 1), "G_ema": generator, "augment_pipe": None}
    if harmful is not None:
        container["augment_pipe"] = Harmful(harmful)
    path = folder / name
    try:
        with open(path, "wb") as f:
            OfficialPickler(f, source=f"import os\nos.system('touch {sentinel}')\n").dump(container)
    finally:  # the stand-in modules exist only while writing (they must not shadow real packages such as spconv)
        for added in set(sys.modules) - before:
            del sys.modules[added]
    (folder / CONFIG_FILE).write_text(generator.config.to_json())
    return path


# --- the parameter tree and loading ---------------------------------------------------------------


def test_full_size_generator_has_the_official_keys_and_shapes():
    official = json.loads((OFFICIAL_KEYS / "G.json").read_text())
    with torch.device("meta"):
        generator = SherfGenerator()
    ours = {k: list(v.shape) for k, v in generator.state_dict().items()}
    assert ours == official
    assert len(ours) == 563 and sum(int(np.prod(s)) for s in ours.values()) == 57_245_456


def test_official_container_loads_strictly_and_runs_nothing(tmp_path):
    generator = tiny_generator(1)
    path = write_official_pickle(tmp_path, generator)
    assert SherfPipeline.weights_status(tmp_path) == (True, f"found {path}")
    assert SherfPipeline.body_model_for(tmp_path) == "smpl"
    pipe = SherfPipeline.load(tmp_path, make_config(SherfPipeline, {"device": "cpu"}))
    loaded = pipe.generator.state_dict()
    for key, value in generator.state_dict().items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert not (tmp_path / "source_ran").exists()
    nested = tmp_path / "root" / "sherf"  # a weights root holding several pipelines' folders
    nested.mkdir(parents=True)
    for item in tmp_path.iterdir():
        if item.is_file():
            item.rename(nested / item.name)
    assert SherfPipeline.weights_status(tmp_path / "root")[0]


def test_a_harmful_reduce_in_the_container_is_refused(tmp_path):
    write_official_pickle(tmp_path, tiny_generator(), harmful=tmp_path / "pwned")
    with pytest.raises(StudioError) as error:
        SherfPipeline.load(tmp_path, SherfConfig(device="cpu"))
    message = str(error.value)
    assert "refused" in message and "SHERF_THuman.pkl" in message and "\n" not in message
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "source_ran").exists()


def test_missing_files_tensors_and_shapes_are_one_line(tmp_path):
    ok, message = SherfPipeline.weights_status(None)
    assert not ok and "--weights" in message and "skhu101/SHERF" in message
    ok, message = SherfPipeline.weights_status(tmp_path)
    assert not ok and "SHERF_<RenderPeople|THuman|HuMMan|zju_mocap>.pkl" in message
    with pytest.raises(StudioError, match="lacks"):
        SherfPipeline.load(tmp_path, SherfConfig())
    generator = tiny_generator()
    del generator.decoder.rgb_linear.bias
    generator.decoder.rgb_linear.register_parameter("bias", None)
    write_official_pickle(tmp_path, generator)
    with pytest.raises(StudioError, match=r"SHERF_THuman.pkl \(G\): tensor 'decoder.rgb_linear.bias' is missing"):
        SherfPipeline.load(tmp_path, SherfConfig(device="cpu"))
    generator = tiny_generator()
    generator.conv1d_projection.weight = torch.nn.Parameter(torch.zeros(7, 48, 1))
    write_official_pickle(tmp_path, generator)
    with pytest.raises(StudioError, match=r"tensor 'conv1d_projection.weight' has shape \[7, 48, 1\], expected \[16, 48, 1\]"):
        SherfPipeline.load(tmp_path, SherfConfig(device="cpu"))
    (tmp_path / "SHERF_THuman.pkl").write_bytes(b"not a pickle")
    with pytest.raises(StudioError, match="SHERF_THuman.pkl: not a readable pickle"):
        SherfPipeline.load(tmp_path, SherfConfig(device="cpu"))
    (tmp_path / "SHERF_THuman.pkl").write_bytes(pickle.dumps({"D": 1}))
    with pytest.raises(StudioError, match="no 'G' module"):
        SherfPipeline.load(tmp_path, SherfConfig(device="cpu"))


def test_studio_weights_round_trip(tmp_path):
    from pipelines.sherf.weights import load_generator, save_generator

    generator = tiny_generator(2, dataclasses.replace(TINY, body_model="anny"))
    save_generator(tmp_path / "sherf", generator)
    assert SherfPipeline.body_model_for(tmp_path) == "anny"
    loaded, path = load_generator(tmp_path)
    assert path.name == "sherf.safetensors" and loaded.config == generator.config
    torch.testing.assert_close(loaded.decoder.alpha_linear.weight, generator.decoder.alpha_linear.weight)


# --- StyleGAN layers -------------------------------------------------------------------------------


def test_fir_upsampling_is_zero_insertion_then_the_filter():
    x = torch.randn(1, 2, 5, 6)
    f = lowpass_filter()
    up = upsample2d(x, f)
    assert up.shape == (1, 2, 10, 12)
    # reference: zeros between samples, pad 2/1, convolve with 4 x the (flipped) filter, by loops
    z = torch.zeros(1, 2, 10, 12)
    z[:, :, ::2, ::2] = x
    z = F.pad(z, [2, 1, 2, 1])
    k = (4 * f).flip([0, 1])
    expected = torch.zeros(1, 2, 10, 12)
    for i in range(10):
        for j in range(12):
            expected[..., i, j] = (z[..., i : i + 4, j : j + 4] * k).sum((-1, -2))
    torch.testing.assert_close(up, expected, atol=1e-5, rtol=1e-5)
    flat = upsample2d(torch.ones(1, 1, 6, 6), f)
    torch.testing.assert_close(flat[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))  # constant in, constant out


def test_modulated_convolution_equals_a_convolution_with_modulated_weights():
    g = torch.Generator().manual_seed(0)
    x, weight, styles = torch.randn(2, 3, 6, 6, generator=g), torch.randn(4, 3, 3, 3, generator=g), torch.randn(2, 3, generator=g)
    out = modulated_conv2d(x, weight, styles, padding=1)
    for b in range(2):
        w = weight * styles[b][None, :, None, None]
        w = w / (w.square().sum((1, 2, 3), keepdim=True) + 1e-8).sqrt()
        torch.testing.assert_close(out[b], F.conv2d(x[b : b + 1], w, padding=1)[0], atol=1e-5, rtol=1e-5)
    up = modulated_conv2d(x, weight, styles, up=2, padding=1, f=lowpass_filter())
    assert up.shape == (2, 4, 12, 12)
    # x2: a transposed convolution (zeros between samples, correlation with the flipped kernel), then the filter
    b = 1
    w = weight * styles[b][None, :, None, None]
    w = w / (w.square().sum((1, 2, 3), keepdim=True) + 1e-8).sqrt()
    z = torch.zeros(1, 3, 11, 11)
    z[:, :, ::2, ::2] = x[b : b + 1]
    transposed = F.conv2d(F.pad(z, [2, 2, 2, 2]), w.flip([2, 3]))  # [1, 4, 13, 13]
    expected = upfirdn2d(transposed, lowpass_filter(), pad=(1, 1, 1, 1), gain=4.0)
    torch.testing.assert_close(up[b : b + 1], expected, atol=1e-4, rtol=1e-4)


def test_triplane_and_noise_modes():
    generator = tiny_generator()
    z = torch.randn(1, 8 * TINY.resnet_width)
    ws = generator.backbone.mapping(z)
    assert ws.shape == (1, generator.backbone.synthesis.num_ws, TINY.w_dim)
    planes = generator.backbone.synthesis(ws)
    assert planes.shape == (1, 3 * TINY.feature_dim, TINY.triplane_resolution, TINY.triplane_resolution)
    torch.testing.assert_close(planes, generator.backbone.synthesis(ws))  # const noise: repeatable
    a = generator.backbone.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
    b = generator.backbone.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)


# --- the pipeline ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(smpl_body):
    """A photo of the synthetic SMPL body (a colour gradient on its silhouette) and a 2-frame orbit."""
    from studio.tasks import orbit_target

    reference = stand_still(Camera.look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), image_size=(120, 90)))
    mask = reference.render(("mask",), body_model=smpl_body)["mask"][0]
    image = np.zeros((120, 90, 3), np.uint8)
    image[..., 0] = np.linspace(30, 250, 120, dtype=np.uint8)[:, None]
    image[..., 1] = 90
    image[mask == 0] = 255
    target = orbit_target(reference, smpl_body, num_frames=2, size=(20, 16))
    return image, mask, reference, target


def tiny_pipeline(config: SherfConfig | None = None, *, seed: int = 0) -> SherfPipeline:
    config = dataclasses.replace(config or SherfConfig(), reference_size=64, device="cpu", sparse_backend="torch")
    return SherfPipeline(tiny_generator(seed), config)


@pytest.mark.slow  # renders
def test_renders_the_person_and_nothing_around_it(scene, smpl_body):
    image, mask, reference, target = scene
    pipe = tiny_pipeline()
    frames = pipe.render([image], [mask], [reference], target, (20, 16), body_model=smpl_body)
    silhouette = target.render(("mask",), size=(20, 16), body_model=smpl_body)["mask"] > 0
    assert frames.shape == (2, 20, 16, 3)
    far = ~torch.nn.functional.max_pool2d(torch.from_numpy(silhouette).float()[:, None], 5, 1, 2)[:, 0].bool().numpy()
    assert frames[far].max() == 0  # rays far from the body stay black (SHERF's background)
    white = tiny_pipeline(SherfConfig(background="white")).render([image], [mask], [reference], target, (20, 16), body_model=smpl_body)
    assert white[far].min() == 255


@pytest.mark.slow  # renders
def test_the_references_body_model_is_carried_to_smpl(scene, smpl_body, smpl_dir, anny, monkeypatch, caplog):
    """Weights trained on SMPL with references fitted with anny: the fit is carried over (logged);
    without SMPL files the error names STUDIO_SMPL_DIR."""
    from studio.nerf import convert_condition

    image, mask, reference, target = scene
    on_anny = convert_condition(reference, smpl_body, anny)
    orbit = convert_condition(target, smpl_body, anny)
    pipe = tiny_pipeline()
    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    with caplog.at_level("WARNING", logger="studio.nerf"):
        frames = pipe.render([image], [mask], [on_anny], orbit, (20, 16), body_model=anny)
    assert frames.shape == (2, 20, 16, 3) and any("trained on the smpl body model" in r.getMessage() for r in caplog.records)
    monkeypatch.delenv("STUDIO_SMPL_DIR")
    from studio.body.registry import _load

    _load.cache_clear()
    with pytest.raises(StudioError, match="STUDIO_SMPL_DIR"):
        pipe.render([image], [mask], [on_anny], orbit, (20, 16), body_model=anny)
    _load.cache_clear()


class TestSherfContract(PipelineContract):
    """The shared pipeline contract on a tiny random generator and the synthetic SMPL body."""

    @pytest.mark.slow  # renders
    def test_each_task_end_to_end(self, contract):
        super().test_each_task_end_to_end(contract)

    @pytest.mark.slow  # renders three times
    def test_seeding(self, contract):
        super().test_seeding(contract)

    @pytest.fixture
    def contract(self, scene, smpl_body):
        image, mask, reference, target = scene

        def make_request(task, *, seed=0, **fields):
            if task == "novel_view":
                base = dict(references=[image], reference_masks=[mask], reference_conditions=[reference], target=target, size=(20, 16), body_model=smpl_body, seed=seed)
                return NovelViewRequest(**{**base, **fields})
            base = dict(reference=image, reference_mask=mask, reference_condition=reference, motion=target, size=(20, 16), body_model=smpl_body, seed=seed)
            return AnimateRequest(**{**base, **fields})

        return ContractCase(SherfPipeline, lambda config: tiny_pipeline(config), make_request, deterministic=True)


@pytest.mark.slow  # renders
def test_random_noise_follows_the_seed(scene, smpl_body):
    image, mask, reference, target = scene
    pipe = tiny_pipeline(SherfConfig(noise="random"))
    a = pipe.render([image], [mask], [reference], target[:1], (20, 16), body_model=smpl_body, seed=0)
    b = pipe.render([image], [mask], [reference], target[:1], (20, 16), body_model=smpl_body, seed=1)
    assert not np.array_equal(a, b)


# --- training and the command --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, smpl_body, scene, walk):
    from studio.nerf import AvatarSource

    image, mask, reference, _ = scene
    source = AvatarSource("stick", np.where(mask[..., None] > 0, image, 0).astype(np.uint8), mask, reference)
    return tiny_dataset(tmp_path_factory.mktemp("sherf_data"), source, smpl_body, walk, "sherf")


@pytest.mark.slow
def test_training_steps_reduce_the_loss(dataset_dir, smpl_body):
    from pipelines.sherf.train import SherfTrainingModel
    from studio.nerf import MultiViewDataset

    from pipelines.sherf.model import build_generator

    dataset = MultiViewDataset(dataset_dir, layout="sherf", body_model=smpl_body)
    model = SherfTrainingModel(build_generator(dataclasses.replace(TINY, body_model="smpl"), seed=3), smpl_body, rays=256, config=SherfConfig(reference_size=64))
    losses = overfit_losses(model, dataset.sample(np.random.default_rng(0), references=1))  # the same rays each step: an overfit
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_train_script_writes_weights_that_render(dataset_dir, tmp_path, smpl_dir, monkeypatch, capsys, scene, smpl_body):
    from pipelines.sherf.train import main

    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    out = tmp_path / "run"
    code = main(["train", "--data", str(dataset_dir), "--output", str(out), "--body", "smpl", "--model-size", "tiny", "--steps", "2", "--rays", "64", "--save-every", "1"])
    assert code == 0, capsys.readouterr().err
    assert SherfPipeline.weights_status(out)[0] and SherfPipeline.body_model_for(out) == "smpl"
    pipe = SherfPipeline.load(out, SherfConfig(reference_size=64, device="cpu"))
    image, mask, reference, target = scene
    assert pipe.render([image], [mask], [reference], target[:1], (20, 16), body_model=smpl_body).shape == (1, 20, 16, 3)
    assert main(["train", "--data", str(tmp_path / "nothing"), "--output", str(out)]) == 1
    assert "error: " in capsys.readouterr().err


@pytest.mark.slow
def test_studio_novel_view_with_an_official_file(tmp_path, smpl_dir, smpl_body, monkeypatch, caplog):
    """`studio novel-view`'s job end to end on a synthetic file in the official container: the photo is
    fitted with SMPL, the body the weights were trained on, even when the command's body model is anny
    (and it says so), so nothing is carried over between body models. Every orbit frame is written."""
    from studio.body import load_body_model
    from studio.media import read_video_frames
    from studio.tasks import TaskOptions, run_novel_view

    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    write_official_pickle(tmp_path / "weights", tiny_generator())
    options = TaskOptions(backend="sherf", weights=str(tmp_path / "weights"), settings=("reference_size=64", "device=cpu"))
    for body_model in (load_body_model(), smpl_body):
        out = tmp_path / f"orbit_{body_model.name}.mp4"
        caplog.clear()
        with caplog.at_level("WARNING", logger="studio.nerf"):
            result = run_novel_view([ASSETS / "media" / "ref_sitting.jpg"], out, options=options, body_model=body_model, orbit=3, size=64)
        frames = np.stack(list(read_video_frames(out)))
        assert frames.shape[0] == 3 and max(frames.shape[1:3]) == 64
        assert result.backend == "sherf" and json.loads(out.with_suffix(".json").read_text())["backend"] == "sherf"
        assert not any("carrying the fit over" in r.getMessage() for r in caplog.records)
        assert ("body model: smpl (the sherf weights were trained on it)" in result.notes) == (body_model.name == "anny")


@pytest.mark.slow
def test_the_command_loads_the_official_container_strictly_and_names_what_is_wrong(tmp_path, smpl_dir, monkeypatch, capsys):
    """`studio novel-view --method sherf` as a user runs it: a file in the official container renders;
    a missing file, a missing tensor and a wrong shape each give one line naming it and write nothing."""
    from studio.media import read_video_frames

    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    weights, out = tmp_path / "weights", tmp_path / "orbit.mp4"

    def novel_view() -> tuple[int, str]:
        return novel_view_command(capsys, [str(ASSETS / "media" / "ref_sitting.jpg")], out, method="sherf", weights=weights)

    weights.mkdir()
    code, err = novel_view()
    assert code == 1 and "SHERF_<RenderPeople|THuman|HuMMan|zju_mocap>.pkl" in err and "skhu101/SHERF" in err and "Traceback" not in err
    generator = tiny_generator()
    write_official_pickle(weights, generator, name="SHERF_RenderPeople.pkl")
    code, err = novel_view()
    assert code == 0, err
    assert len(list(read_video_frames(out))) == 2
    out.unlink()
    out.with_suffix(".json").unlink()
    name, owner, parameter = "decoder.alpha_linear.bias", generator.decoder.alpha_linear, generator.decoder.alpha_linear.bias
    owner._parameters["bias"] = None  # the file lacks this tensor
    write_official_pickle(weights, generator, name="SHERF_RenderPeople.pkl")
    code, err = novel_view()
    assert code == 1 and f"SHERF_RenderPeople.pkl (G): tensor '{name}' is missing" in err and len(err.strip().splitlines()) == 1, err
    owner._parameters["bias"] = torch.nn.Parameter(torch.zeros(*parameter.shape, 2))
    write_official_pickle(weights, generator, name="SHERF_RenderPeople.pkl")
    code, err = novel_view()
    assert code == 1 and f"tensor '{name}' has shape {[*parameter.shape, 2]}, expected {list(parameter.shape)}" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not out.with_suffix(".json").exists()


@pytest.mark.slow
def test_the_web_demos_novel_view_tab_runs_sherf(tmp_path, smpl_dir, monkeypatch):
    """The Novel view tab's job (gradio_app.run_novel_view_job) with SHERF weights in $STUDIO_WEIGHTS.
    The tab offers pipelines that run at a practical speed here; SHERF needs a GPU for that, so the
    test says one is there (the tab's job itself runs on the CPU, as device=cpu asks)."""
    sys.path.insert(0, str(ROOT))
    import gradio_app

    from studio.media import read_video_frames

    monkeypatch.setenv("STUDIO_SMPL_DIR", str(smpl_dir))
    monkeypatch.setenv("STUDIO_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr("studio.registry.has_cuda", lambda: True)
    monkeypatch.setattr(gradio_app, "WORK", tmp_path / "work")
    write_official_pickle(tmp_path / "weights", tiny_generator())
    request = types.SimpleNamespace(session_hash="novel-view-test")
    video, notes = gradio_app.run_novel_view_job(
        [str(ASSETS / "media" / "ref_sitting.jpg")], None, 8, "sherf", request, progress=lambda *a, **k: None,
        settings={"reference_size": 64, "device": "cpu", "samples": 6, "radius": 0.02},  # the tab renders 8+ frames at 384 px: keep them cheap
    )  # fmt: skip
    frames = list(read_video_frames(video))
    assert len(frames) == 8 and max(frames[0].shape[:2]) == 384 and "backend: sherf" in notes
    assert Path(video).is_relative_to((tmp_path / "work").resolve())


@pytest.mark.slow
def test_training_runs_on_two_processes_and_they_stop_together(dataset_dir, tmp_path, smpl_dir):
    """train.py under a distributed launcher (torchrun, as `accelerate launch` starts it): two CPU
    processes average their gradients and stop at the same step when the time budget runs out."""
    import os
    import re
    import subprocess

    env = {**os.environ, "STUDIO_SMPL_DIR": str(smpl_dir)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29950 + os.getpid() % 40)]
    args = ["train", "--data", str(dataset_dir), "--output", str(tmp_path / "run"), "--body", "smpl", "--model-size", "tiny", "--steps", "100000", "--time-budget", "4", "--rays", "64"]
    result = subprocess.run([*launcher, "-m", "pipelines.sherf.train", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = re.findall(r"trained (\d+) steps", result.stdout)
    assert len(steps) == 2 and steps[0] == steps[1], result.stdout
    assert SherfPipeline.weights_status(tmp_path / "run")[0]
