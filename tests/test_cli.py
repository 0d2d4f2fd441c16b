"""The CLI as a user runs it: a real subprocess, real files, one-line errors."""

from __future__ import annotations

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


def test_render_video_has_every_frame_and_map_side_by_side(tmp_path):
    out = tmp_path / "maps.mp4"
    r = studio("render", WALK, "-o", out, "--maps", "depth,normal,skeleton", "--size", "128")
    assert r.returncode == 0, r.stderr
    frames = list(read_video_frames(out))
    assert len(frames) == 60
    assert frames[0].shape == (128, 3 * 96, 3)  # 640x480 camera -> 128x96 tiles, three of them
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left


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


def test_debug_shows_the_traceback(tmp_path):
    r = studio("--debug", "render", tmp_path / "missing.npz", "-o", tmp_path / "o.mp4")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_unknown_map_and_bad_output_suffix(tmp_path):
    r = studio("render", WALK, "-o", tmp_path / "o.mp4", "--maps", "depth,albedo")
    assert r.returncode == 1 and "unknown map" in r.stderr
    r = studio("render", WALK, "-o", tmp_path / "o.gif", "--size", "64")
    assert r.returncode == 1 and ".mp4" in r.stderr and not (tmp_path / "o.gif").exists()


def test_doctor_reports_and_passes():
    r = studio("doctor", env={"STUDIO_SMPLX_DIR": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("EGL renderer", "anny body model", "SMPL-X model files", "MediaPipe models", "ffmpeg"):
        assert line in r.stdout
    assert "embedded defaults work" in r.stdout


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
