"""The Gradio demo: its jobs called directly, then the whole page in a real (headless) chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import ASSETS, ROOT

sys.path.insert(0, str(ROOT))
import gradio_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def request(name: str = "test-session"):
    return types.SimpleNamespace(session_hash=name)


def no_progress(*args, **kwargs) -> None:
    return None


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(gradio_app, "WORK", tmp_path / "work")
    return tmp_path / "work"


def test_paths_that_were_not_uploaded_are_refused(tmp_path, work):
    outside = tmp_path / "secret.bvh"
    outside.write_text("HIERARCHY")
    with pytest.raises(gr.Error, match="only files uploaded through this page"):
        gradio_app.run_render(str(outside), request(), progress=no_progress)
    with pytest.raises(gr.Error, match="add a motion"):
        gradio_app.run_render(None, request(), progress=no_progress)
    with pytest.raises(gr.Error, match="add a reference image first"):
        gradio_app.run_animate(None, None, "mesh", 512, request(), progress=no_progress)


def test_long_videos_are_refused_before_any_work(tmp_path, work, monkeypatch):
    from studio.media import VideoWriter

    monkeypatch.setattr(gradio_app, "UPLOADS", tmp_path)
    video = tmp_path / "long.mp4"
    with VideoWriter(video, fps=5) as writer:
        for _ in range(int(5 * (gradio_app.MAX_SECONDS + 5))):
            writer.write(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(gr.Error, match=r"the video is 25 s long; this demo takes up to 20 s"):
        gradio_app.run_pose(str(video), False, -1, request(), progress=no_progress)
    assert not list(work.rglob("*.npz"))


def test_errors_name_uploads_without_server_paths(tmp_path, work, monkeypatch):
    monkeypatch.setattr(gradio_app, "UPLOADS", tmp_path / "gradio")
    broken = tmp_path / "gradio" / "0123abcd" / "broken.mp4"
    broken.parent.mkdir(parents=True)
    broken.write_text("not a video")
    with pytest.raises(gr.Error) as error:
        gradio_app.run_animate(str(ASSETS / "media" / "ref_sitting.jpg"), str(broken), "mesh", 256, request(), progress=no_progress)
    assert error.value.message.startswith("broken.mp4: not a readable video") and str(tmp_path) not in error.value.message


def test_render_job(work):
    video, gallery = gradio_app.run_render(str(ASSETS / "media" / "cmu_02_03_run.bvh"), request(), progress=no_progress)
    assert Path(video).is_file() and Path(video).is_relative_to(gradio_app.session_dir(request()))
    assert [name for _, name in gallery] == ["depth", "normal", "semantic", "skeleton"]
    assert gallery[1][0].shape[2] == 3 and gallery[1][0].max() > 0


def test_pose_job_on_an_image(work):
    from studio.condition import HumanCondition

    image, video, gallery, motion, summary = gradio_app.run_pose(str(ASSETS / "media" / "ref_sitting.jpg"), True, -1, request(), progress=no_progress)
    assert image["visible"] and not video["visible"] and Path(image["value"]).is_file()
    assert HumanCondition.load(motion).num_frames == 1 and summary.startswith("1 frame(s) fitted")
    assert len(gallery) == 4
    folder = gradio_app.session_dir(request())
    assert folder.is_dir() and folder.parent == work.resolve()
    gradio_app.end_session(request())
    assert not folder.exists() and work.is_dir()


def test_backends_and_pipelines_come_from_the_registry():
    assert gradio_app.available_backends()[0] == "mesh"
    assert "| `champ` |" in gradio_app.pipelines_table()


def test_server_paths_are_never_web_settings():
    """A setting that names a file or folder on the server (an avatar to read, a folder to write) gets
    no widget, so no request can set it; the CLI still can."""
    from studio.pipeline import TASKS, ConfigField, config_fields
    from studio.registry import practical_pipelines, registered_pipelines

    kinds = (Path, Path | None, str | Path, str | Path | None, str, int | None)
    assert [ConfigField("x", t, None, "").names_a_path for t in kinds] == [True, True, True, True, False, False]
    path_fields = {(name, f.name) for task in TASKS for name, cls in registered_pipelines(task).items() for f in config_fields(cls.Config) if f.names_a_path}
    assert ("gaussians", "avatar") in path_fields and ("gaussians", "export_frames") in path_fields
    with gr.Blocks():
        offered = {key for task in TASKS if practical_pipelines(task) for key in gradio_app.TaskControls(task).widgets}
    assert offered and not offered & path_fields


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(tmp_path):
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("STUDIO_WEIGHTS", None)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "gradio_app.py")], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the app did not start: {(tmp_path / 'server.log').read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield url, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it with apt where it can)")
def test_animate_example_in_a_real_browser(served_app):
    """A person's path through the page: an error for a missing input, one click on an example, Animate, the video."""
    from playwright.sync_api import sync_playwright

    url, tmp = served_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_selector("#animate-button", timeout=60_000)

        page.click("#animate-button")  # nothing uploaded yet: one readable message, no traceback
        page.get_by_text("add a reference image first").first.wait_for(timeout=30_000)
        assert "Traceback" not in page.content()

        page.get_by_text("motion_dribble.mp4").first.click()  # the example fills both inputs
        page.get_by_text("231.3 KB").first.wait_for(timeout=30_000)
        page.click("#animate-button")
        page.wait_for_selector("#animation-video video[src]", timeout=300_000)
        assert "40 frames at 12 fps" in page.inner_text("#animate-notes")
        sessions = tmp / "studio-gradio"
        assert len(list(sessions.iterdir())) == 1  # this page's session folder
        shot = tmp / "animate.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 50_000
        src = page.get_attribute("#animation-video video", "src")
        with urllib.request.urlopen(src if src.startswith("http") else url.rstrip("/") + src) as response:
            assert response.read(12)[4:8] == b"ftyp"  # an mp4 comes back
        browser.close()
    deadline = time.time() + 20
    while sessions.exists() and any(sessions.iterdir()) and time.time() < deadline:
        time.sleep(0.5)  # the page's unload event removes the session's folder
    assert not any(sessions.iterdir())


def test_session_folders_are_digests_inside_work(work):
    for hostile in ("..", "../../x", "/etc", "a/../../b", "", None):
        folder = gradio_app.session_dir(request(hostile))
        assert folder.parent == work.resolve() and len(folder.name) == 32
    gradio_app.end_session(request(".."))
    assert work.parent.is_dir()


@pytest.mark.slow
def test_hostile_requests_over_http(served_app):
    """Crafted requests against the running server: a traversing session hash in the heartbeat and in
    a job, a motion over the length limit, and a file that is not an image as the reference."""
    import http.client

    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, tmp = served_app
    work = tmp / "studio-gradio"
    canary = tmp / "canary.txt"
    canary.write_text("must survive")
    port = int(url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/gradio_api/heartbeat/..")  # then hang up: the app's unload event runs for session ".."
    assert conn.getresponse().read1(64).startswith(b"data:")
    conn.close()
    time.sleep(3)
    assert canary.is_file() and work.is_dir()

    client = Client(url, verbose=False)
    client.session_hash = "../../x"
    video, _ = client.predict(handle_file(str(ASSETS / "media" / "cmu_02_03_run.bvh")), api_name="/run_render")
    assert Path(video).is_file()
    outside = [p for p in (tmp.parent / "x", tmp / "x", work.parent / "x") if p.exists()]
    assert not outside, outside
    sessions = [p for p in work.iterdir()]
    assert len(sessions) == 1 and len(sessions[0].name) == 32  # the digest, not the hash
    assert list(sessions[0].rglob("maps.mp4"))

    long_bvh = tmp / "long.bvh"
    long_bvh.write_text((ASSETS / "media" / "cmu_02_03_run.bvh").read_text().replace("Frame Time: .0083333", "Frame Time: 0.35"))
    jobs = list(sessions[0].iterdir())
    with pytest.raises(AppError, match=r"the motion is 61 s long; this demo takes up to 20 s"):
        client.predict(handle_file(str(long_bvh)), api_name="/run_render")
    assert list(sessions[0].iterdir()) == jobs  # refused from the header, before any work or folder

    not_an_image = tmp / "notes.jpg"
    not_an_image.write_text("these are notes")
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(not_an_image)), handle_file(str(ASSETS / "media" / "cmu_02_03_run.bvh")), "mesh", 256, api_name="/run_animate")
    message = str(error.value)
    assert "notes.jpg: not a readable image" in message and str(tmp) not in message and len(message.splitlines()) == 1, message
