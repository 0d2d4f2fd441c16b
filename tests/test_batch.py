"""`studio batch`: many files through one job, resumable, with a summary table, spread over processes
by accelerate's process state (two CPU processes with torchrun in the slow tier)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ASSETS, ROOT

from studio.batch import BatchOptions, plan, read_summary, run_batch
from studio.errors import StudioError


@pytest.fixture
def motions(tmp_path, walk):
    """Three short motions and one broken file."""
    paths = []
    for i in range(3):
        paths.append(walk[i * 2 : i * 2 + 2].save(tmp_path / f"m{i}.npz"))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK not really")
    return paths, broken


def test_plan_names_outputs_and_refuses_clashes(tmp_path, motions):
    paths, _ = motions
    items = plan("render", paths, tmp_path / "out")
    assert [i.output.name for i in items] == ["m0.mp4", "m1.mp4", "m2.mp4"]
    assert plan("pose", paths[:1], tmp_path / "out")[0].output.suffix == ".npz"
    other = tmp_path / "sub"
    other.mkdir()
    clash = (other / "m0.npz")
    clash.write_bytes(paths[0].read_bytes())
    with pytest.raises(StudioError, match="would both write"):
        plan("render", [paths[0], clash], tmp_path / "out")
    with pytest.raises(StudioError, match="unknown batch job 'paint'"):
        plan("paint", paths, tmp_path / "out")
    with pytest.raises(StudioError, match="no such file"):
        plan("render", [tmp_path / "nope.npz"], tmp_path / "out")
    with pytest.raises(StudioError, match="needs --motion"):
        run_batch("animate", [ASSETS / "media" / "ref_sitting.jpg"], tmp_path / "out")


def test_batch_render_summary_failures_and_resume(tmp_path, motions):
    paths, broken = motions
    out = tmp_path / "out"
    options = BatchOptions(size=64, maps="normal,mask")
    seen = []
    result = run_batch("render", [*paths, broken], out, options=options, on_item=seen.append)
    assert [i.status for i in result.items] == ["done", "done", "done", "failed"], [i.reason for i in result.items]
    assert "broken.npz" in result.items[3].reason and "\n" not in result.items[3].reason
    assert len(seen) == 4 and result.num_processes == 1 and result.is_main
    rows = read_summary(out / "summary.tsv")
    assert [r["status"] for r in rows] == ["done", "done", "done", "failed"] and rows[3]["reason"] == result.items[3].reason
    assert all((out / f"m{i}.mp4").exists() and (out / f"m{i}.json").exists() for i in range(3))
    assert not (out / "broken.mp4").exists()
    # Again: the finished ones are skipped, the failed one is tried again.
    again = run_batch("render", [*paths, broken], out, options=options)
    assert [i.status for i in again.items] == ["skipped", "skipped", "skipped", "failed"]
    # A changed input, or other options, are done again; an output deleted by hand too.
    paths[1].write_bytes(paths[2].read_bytes())
    (out / "m2.mp4").unlink()
    third = run_batch("render", paths, out, options=options)
    assert [i.status for i in third.items] == ["skipped", "done", "done"]
    fourth = run_batch("render", paths[:1], out, options=BatchOptions(size=64, maps="depth"))
    assert fourth.items[0].status == "done"


def _launch(args: list[str], tmp_path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "STUDIO_CACHE_DIR": str(tmp_path / "cache")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(29400 + os.getpid() % 500)]
    return subprocess.run([*torchrun, "-m", "studio.cli", "batch", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_two_processes_share_the_work_and_the_main_one_writes_the_summary(tmp_path, motions):
    paths, broken = motions
    out = tmp_path / "out"
    r = _launch(["render", *map(str, paths), str(broken), "-o", str(out), "--size", "64", "--maps", "normal"], tmp_path)
    assert r.returncode == 1, r.stderr  # one input failed
    rows = read_summary(out / "summary.tsv")
    assert [row["status"] for row in rows] == ["done", "done", "done", "failed"]
    assert {row["process"] for row in rows} == {"0", "1"}  # both processes took a share
    assert r.stderr.count("studio batch render: 4 inputs, 2 processes") == 1  # one summary, by the main process
    assert "1 of 4 inputs failed" in r.stderr
    assert all((out / f"m{i}.mp4").exists() for i in range(3))
    r = _launch(["render", *map(str, paths), "-o", str(out), "--size", "64", "--maps", "normal"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert [row["status"] for row in read_summary(out / "summary.tsv")] == ["skipped"] * 3


@pytest.mark.slow
def test_batch_pose_with_two_processes(tmp_path):
    from studio.media import VideoReader, write_image

    frames = [f for i, f in enumerate(VideoReader(ASSETS / "media" / "motion_dribble.mp4", max_side=480)) if i in (0, 20)]
    photos = [str(write_image(tmp_path / f"p{i}.png", f)) for i, f in enumerate(frames)]
    r = _launch(["pose", *photos, "-o", str(tmp_path / "poses")], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_summary(tmp_path / "poses" / "summary.tsv")
    assert [row["status"] for row in rows] == ["done", "done"] and {row["process"] for row in rows} == {"0", "1"}
    from studio.condition import HumanCondition

    assert HumanCondition.load(tmp_path / "poses" / "p1.npz").num_frames == 1
