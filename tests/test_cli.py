"""The CLI as a user runs it: a real subprocess, real files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from studio.media import VideoWriter, atomic_path, read_video_frames

ROOT = Path(__file__).resolve().parents[1]
WALK = ROOT / "assets" / "motions" / "walk.npz"


def studio(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "studio.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


@pytest.mark.slow
def test_render_video_has_every_frame_and_map_side_by_side(tmp_path):
    out = tmp_path / "maps.mp4"
    r = studio("render", WALK, "-o", out, "--maps", "depth,normal,skeleton", "--size", "128")
    assert r.returncode == 0, r.stderr
    frames = list(read_video_frames(out))
    assert len(frames) == 60
    assert frames[0].shape == (128, 3 * 96, 3)  # 640x480 camera -> 128x96 tiles, three of them
    assert sorted(tmp_path.iterdir()) == [out.with_suffix(".json"), out]  # the video and its settings; no temporary files left
    assert json.loads(out.with_suffix(".json").read_text())["maps"] == ["depth", "normal", "skeleton"]


@pytest.mark.slow
def test_render_png_folder(tmp_path):
    out = tmp_path / "maps"
    r = studio("render", WALK, "-o", f"{out}/", "--maps", "mask,depth_metric", "--size", "64")
    assert r.returncode == 0, r.stderr
    assert len(list(out.glob("mask_*.png"))) == 60 and len(list(out.glob("depth_metric_*.npy"))) == 60
    assert np.load(out / "depth_metric_00000.npy").max() > 2.0


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.npz", None, "no such file"),
        ("empty.npz", b"", "not a readable studio condition"),
        ("notes.npz", b"not a motion", "not a readable studio condition"),
        ("half.npz", WALK.read_bytes()[:5000], "not a readable studio condition"),
    ],
)
@pytest.mark.slow
def test_bad_motion_is_one_line_and_leaves_nothing(tmp_path, name, content, message):
    src = tmp_path / name
    if content is not None:
        src.write_bytes(content)
    out = tmp_path / "out.mp4"
    r = studio("render", src, "-o", out)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert r.stdout == ""


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    r = studio("--debug", "render", tmp_path / "missing.npz", "-o", tmp_path / "o.mp4")
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.slow
def test_unknown_map_and_bad_output_suffix(tmp_path):
    r = studio("render", WALK, "-o", tmp_path / "o.mp4", "--maps", "depth,albedo")
    assert r.returncode == 1 and "unknown map" in r.stderr
    r = studio("render", WALK, "-o", tmp_path / "o.gif", "--size", "64")
    assert r.returncode == 1 and ".mp4" in r.stderr and not (tmp_path / "o.gif").exists()


@pytest.mark.slow
def test_doctor_reports_and_passes():
    r = studio("doctor", env={"STUDIO_SMPLX_DIR": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("EGL renderer", "anny body model", "smplx model files", "smpl model files", "MediaPipe models", "ffmpeg", "studio.pipelines", "mesh"):
        assert line in r.stdout
    assert "embedded defaults work" in r.stdout


@pytest.mark.slow
def test_doctor_finds_smplx_files(smplx_dir):
    r = studio("doctor", "--body-model-dir", smplx_dir)
    assert r.returncode == 0
    assert "SMPLX_NEUTRAL.npz" in r.stdout


def test_atomic_path_removes_the_partial_file_on_error(tmp_path):
    target = tmp_path / "result.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_video_writer_is_atomic(tmp_path):
    out = tmp_path / "v.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, fps=10) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(out, fps=10) as w:
        for i in range(5):
            w.write(np.full((32, 48, 3), i * 40, np.uint8))
    frames = list(read_video_frames(out))
    assert len(frames) == 5 and frames[0].shape == (32, 48, 3)
    assert abs(int(frames[4].mean()) - 160) < 6


MEDIA = ROOT / "assets" / "media"


def assert_one_line_error(r, message, *leftovers):
    assert r.returncode == 1, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for path in leftovers:
        assert not path.exists()
        assert not list(path.parent.glob(f".{path.stem}*"))


@pytest.mark.slow
def test_pose_image_writes_condition_and_preview(tmp_path):
    from studio.condition import HumanCondition

    out, preview = tmp_path / "sit.npz", tmp_path / "sit.png"
    r = studio("pose", MEDIA / "ref_sitting.jpg", "-o", out, "--preview", preview)
    assert r.returncode == 0, r.stderr
    cond = HumanCondition.load(out)
    assert cond.num_frames == 1 and cond.camera.image_size == (640, 960)
    with np.load(out) as data:
        assert data["joints3d"].shape == (1, 76, 3) and "left_wrist" in data["joint_names"].tolist()
        assert 1.0 < data["joints3d"][0, 0, 2] < 10.0  # the pelvis is metres in front of the camera
    import imageio.v3 as iio

    assert iio.imread(preview).shape == (640, 960, 3)
    assert "W0000" not in r.stderr and "TensorFlow" not in r.stderr  # native chatter is filtered


def grey_gap_video(path, frames, gap):
    """The clip with frames ``gap`` replaced by an empty grey picture."""
    with VideoWriter(path, fps=12) as w:
        for i, f in enumerate(frames):
            w.write(np.full_like(f, 128) if i in gap else f)


@pytest.mark.slow
def test_pose_video_counts_and_fills_frames_without_a_person(tmp_path):
    from studio.condition import HumanCondition
    from studio.media import VideoReader

    frames = list(VideoReader(MEDIA / "motion_dribble.mp4", max_side=320))[:20]
    src = tmp_path / "gap.mp4"
    grey_gap_video(src, frames, gap={8, 9, 10})
    out, preview = tmp_path / "gap.npz", tmp_path / "gap_preview.mp4"
    r = studio("pose", src, "-o", out, "--preview", preview)
    assert r.returncode == 0, r.stderr
    assert "no person in 3 of 20 frames" in r.stderr
    cond = HumanCondition.load(out)
    assert cond.num_frames == 20 and cond.fps == 12.0
    pelvis = np.load(out)["joints3d"][:, 0]
    assert np.isfinite(pelvis).all() and np.linalg.norm(np.diff(pelvis, axis=0), axis=1).max() < 0.5
    assert len(list(read_video_frames(preview))) == 20


@pytest.mark.slow
def test_pose_bad_inputs_are_one_line_and_leave_nothing(tmp_path):
    out = tmp_path / "m.npz"
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(os.urandom(4000))
    assert_one_line_error(studio("pose", corrupt, "-o", out), "not a readable video", out)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert_one_line_error(studio("pose", empty, "-o", out), "empty", out)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert_one_line_error(studio("pose", notes, "-o", out), "unsupported input", out)
    from studio.media import write_image

    sky = write_image(tmp_path / "sky.png", np.tile(np.linspace(60, 200, 240, dtype=np.uint8)[:, None, None], (1, 320, 3)))
    assert_one_line_error(studio("pose", sky, "-o", out), "no person", out)
    frames = [np.full((240, 320, 3), 90, np.uint8)] * 6
    nobody = tmp_path / "nobody.mp4"
    grey_gap_video(nobody, frames, gap=set())
    preview = tmp_path / "p.mp4"
    assert_one_line_error(studio("pose", nobody, "-o", out, "--preview", preview), "no person found in any", out, preview)
    assert_one_line_error(studio("pose", MEDIA / "ref_sitting.jpg", "-o", tmp_path / "m.txt"), ".npz", tmp_path / "m.txt")


@pytest.mark.slow
def test_pose_picks_a_person_among_several(tmp_path):
    from studio.media import VideoReader, write_image

    frame = next(iter(VideoReader(MEDIA / "motion_two_people.mp4", max_side=640)))
    image = write_image(tmp_path / "two.png", frame)
    r = studio("pose", image, "-o", tmp_path / "a.npz", "--person", "1")
    assert r.returncode == 0, r.stderr
    assert "2 people in view, followed person 1" in r.stderr
    assert_one_line_error(studio("pose", image, "-o", tmp_path / "b.npz", "--person", "3"), "found 2 people", tmp_path / "b.npz")


@pytest.mark.slow
def test_motion_import_render_and_export(tmp_path):
    motion, bvh = tmp_path / "run.npz", tmp_path / "run.bvh"
    r = studio("motion", "import", MEDIA / "cmu_02_03_run.bvh", "-o", motion, "--fps", "24")
    assert r.returncode == 0, r.stderr
    assert "35 frames at 24 fps" in r.stderr
    r = studio("render", motion, "-o", tmp_path / "run.mp4", "--maps", "normal", "--size", "96")
    assert r.returncode == 0, r.stderr
    r = studio("motion", "export", motion, "-o", bvh)
    assert r.returncode == 0, r.stderr
    assert bvh.read_text().startswith("HIERARCHY\nROOT pelvis")
    cut = tmp_path / "cut.bvh"
    cut.write_text(bvh.read_text()[:3000])
    assert_one_line_error(studio("motion", "import", cut, "-o", tmp_path / "cut.npz"), "truncated", tmp_path / "cut.npz")


@pytest.mark.slow
def test_pose_with_the_smplx_body(tmp_path, smplx_dir):
    from studio.condition import HumanCondition

    out = tmp_path / "sit_smplx.npz"
    r = studio("pose", MEDIA / "ref_sitting.jpg", "-o", out, "--body", "smplx", "--body-model-dir", smplx_dir, "--no-hands")
    assert r.returncode == 0, r.stderr
    cond = HumanCondition.load(out)
    assert cond.body_model == "smplx" and cond.body["betas"].shape[0] == 1
    r = studio("pose", MEDIA / "ref_sitting.jpg", "-o", tmp_path / "x.npz", "--body", "smplx", "--body-model-dir", tmp_path)
    assert_one_line_error(r, "SMPLX_NEUTRAL", tmp_path / "x.npz")
