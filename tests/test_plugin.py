"""A third-party pipeline plugs in without touching studio/: examples/plugin_pipeline installed into a
temporary environment appears in `studio pipelines`, runs through `studio animate --backend example
--set color=...`, and appears in the web demo's menu with its settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ASSETS, ROOT
from pipeline_contract import ContractCase, PipelineContract

EXAMPLE = ROOT / "examples" / "plugin_pipeline"
sys.path.insert(0, str(EXAMPLE))
from studio_example_pipeline import ExamplePipeline  # noqa: E402


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """PYTHONPATH of a temporary site folder with the example installed (its entry point included)."""
    site = tmp_path_factory.mktemp("plugin_site")
    source = tmp_path_factory.mktemp("plugin_source") / "plugin_pipeline"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))  # the build writes beside the source
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "250"}


def run(args, env, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600, **kwargs)


@pytest.mark.slow
def test_the_example_plugin_plugs_in(plugin_env, tmp_path):
    from studio.media import read_video_frames

    r = run(["-m", "studio.cli", "pipelines", "--settings"], plugin_env)
    assert r.returncode == 0, r.stderr
    assert "example" in r.stdout and "color" in r.stdout and "#ff8800" in r.stdout
    without = run(["-m", "studio.cli", "pipelines"], {**plugin_env, "PYTHONPATH": ""})
    assert "example" not in without.stdout  # it comes from the installed plugin, not from studio

    out = tmp_path / "tinted.mp4"
    r = run(["-m", "studio.cli", "animate", str(ASSETS / "media" / "ref_sitting.jpg"), str(ASSETS / "media" / "cmu_02_03_run.bvh"),
             "-o", str(out), "--size", "128", "--backend", "example", "--set", "color=#0000ff", "--set", "strength=1"], plugin_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "backend: example" in r.stderr
    frames = np.stack(list(read_video_frames(out)))
    assert frames.shape[0] == 44
    body = frames.max(-1) > 60
    assert frames[body][:, 2].mean() > 180 and frames[body][:, 0].mean() < 60  # blue, as asked
    assert json.loads(out.with_suffix(".json").read_text())["config"]["settings"] == {"color": "#0000ff", "strength": 1.0}

    r = run(["-m", "studio.cli", "animate", str(ASSETS / "media" / "ref_sitting.jpg"), str(ASSETS / "media" / "cmu_02_03_run.bvh"),
             "-o", str(tmp_path / "x.mp4"), "--backend", "example", "--set", "colour=red"], plugin_env)  # fmt: skip
    assert r.returncode == 1 and "unknown setting 'colour' for the example pipeline" in r.stderr and "color (str" in r.stderr

    code = (
        "import sys; sys.path.insert(0, %r); import gradio_app; app = gradio_app.build_app(); "
        "print(gradio_app.available_backends()); "
        "print(sorted({getattr(b, 'label', None) for b in app.blocks.values() if getattr(b, 'label', None) in ('color', 'strength')}))"
    ) % str(ROOT)
    r = run(["-c", code], plugin_env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    menu, widgets = r.stdout.strip().splitlines()[-2:]
    assert "'example'" in menu and menu.startswith("['mesh'")
    assert widgets == "['color', 'strength']"


class TestExampleContract(PipelineContract):
    @pytest.fixture
    def contract(self, walk, anny):
        from studio.pipeline import AnimateRequest

        motion = walk[:4]
        size = motion.camera.resized(96).image_size

        def make_request(task, *, seed=0, **fields):
            base = dict(reference=None, reference_mask=None, reference_condition=None, motion=motion, size=size, body_model=anny, seed=seed)
            return AnimateRequest(**{**base, **fields})

        return ContractCase(ExamplePipeline, lambda config: ExamplePipeline.load(None, config), make_request, deterministic=True, registered=False)


def test_a_pipelines_notes_reach_the_user_once(monkeypatch, tmp_path):
    """What a pipeline puts in its ``notes`` list is reported by the task job (and emptied, so a
    second call does not repeat it); a pipeline without notes adds nothing."""
    import studio.registry
    from studio.pipeline import AvatarRequest, PipelineBase, take_notes
    from studio.tasks import TaskOptions, _Task

    class Noting(PipelineBase):
        name, tasks, embedded = "noting", ("avatar",), True

        def __init__(self) -> None:
            self.notes: list[str] = []

        @classmethod
        def load(cls, weights, config):
            return cls()

        def avatar(self, request):
            self.notes.append("the photo is dark")
            return None

    monkeypatch.setattr(studio.registry, "resolve", lambda task, backend, weights: (Noting, "chosen"))
    job = _Task("avatar", TaskOptions(backend="noting"))
    request = AvatarRequest(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), object(), None, tmp_path / "a.ply")
    job.call(request)
    job.call(request)
    assert job.notes == ["backend: noting (chosen)", "the photo is dark", "the photo is dark"]
    assert job.pipe.notes == [] and take_notes(job.pipe) == [] and take_notes(object()) == []
