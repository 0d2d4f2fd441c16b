"""`studio animate` with the embedded mesh backend: motion transfer, the avatar, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ASSETS
from test_cli import assert_one_line_error, studio

from studio.animate import output_size
from studio.animate.transfer import transfer_motion
from studio.body.joints import JOINT_INDEX
from studio.condition import project, world_to_camera
from studio.errors import StudioError
from studio.media import VideoReader, read_video_frames

MEDIA = ASSETS / "media"
FEET = [JOINT_INDEX[n] for n in ("left_heel", "right_heel", "left_big_toe", "right_big_toe")]


@pytest.fixture(scope="module")
def reference(anny):
    from studio.capture import pose_image
    from studio.media import read_image

    image = read_image(MEDIA / "ref_sitting.jpg")
    return image, pose_image(image, body_model=anny)


@pytest.fixture(scope="module")
def run(anny):
    from studio.motion import import_motion

    return import_motion(MEDIA / "cmu_02_03_run.bvh", anny, fps=15.0)


def test_transfer_keeps_the_reference_shape_and_camera_and_the_motion_rotations(anny, reference, run):
    _, ref = reference
    size = output_size(ref.condition.camera.image_size, 256)
    cond, placement = transfer_motion(run, ref.condition, motion_model=anny, reference_model=anny, image_size=size)
    assert cond.num_frames == run.num_frames and cond.fps == run.fps
    assert cond.camera.image_size == size == (170, 256)
    assert torch.equal(cond.body["phenotype"], ref.condition.body["phenotype"].expand(run.num_frames, -1))
    assert torch.allclose(cond.body["body_pose"], run.body["body_pose"])
    assert torch.allclose(cond.camera.extrinsics, ref.condition.camera.extrinsics.expand(run.num_frames, 4, 4))
    # Every joint of every frame is in the picture, and the feet stay near one ground height.
    joints = cond.posed(anny).joints
    uv = project(world_to_camera(joints, cond.camera.extrinsics), cond.camera.K)
    h, w = size
    assert ((uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) & (uv[..., 1] <= h)).all()
    lowest = joints[:, FEET, 1].min(dim=1).values
    assert float(lowest.max() - lowest.min()) < 0.15  # a run: one foot is always near the ground
    assert placement["scale"] > 0


def test_a_photo_cut_above_the_feet_keeps_its_framing(anny, run):
    """A standing person framed from the thighs up (feet out of the picture) is not pushed far back
    to show the legs: what the photo shows stays in view, the legs may leave through the bottom."""
    import dataclasses

    from studio.condition import Camera, HumanCondition

    standing = HumanCondition.load(ASSETS / "motions" / "walk.npz")[0]
    cam = standing.camera
    joints = standing.posed(anny).joints
    neck = project(world_to_camera(joints, cam.extrinsics), cam.K)[0, JOINT_INDEX["neck"]]
    K = cam.K.clone()  # zoom 2.5x about the neck, which lands at 25% of the height
    K[:, :2, :2] *= 2.5
    h, w = cam.image_size
    K[:, 0, 2] = 2.5 * (K[0, 0, 2] - neck[0]) + w / 2
    K[:, 1, 2] = 2.5 * (K[0, 1, 2] - neck[1]) + 0.25 * h
    portrait = dataclasses.replace(standing, camera=Camera(K=K, extrinsics=cam.extrinsics, image_size=cam.image_size))
    feet_uv = project(world_to_camera(joints, portrait.camera.extrinsics), portrait.camera.K)[0, FEET]
    assert (feet_uv[:, 1] > h).all()  # the photo does not show the feet
    cond, placement = transfer_motion(run, portrait, motion_model=anny, reference_model=anny)
    assert placement["depth_factor"] < 3.0  # pushing back far enough to show the legs would need ~4x
    uv = project(world_to_camera(cond.posed(anny).joints, cond.camera.extrinsics), cond.camera.K)
    head = uv[:, JOINT_INDEX["head"]]
    assert ((head[:, 0] >= 0) & (head[:, 0] <= w) & (head[:, 1] >= 0) & (head[:, 1] <= h)).all()
    assert (uv[:, FEET, 1] > h).any()  # and the feet do leave through the bottom edge at times


def test_transfer_without_keep_in_view_keeps_the_whole_path(anny, reference, run):
    _, ref = reference
    cond, placement = transfer_motion(run, ref.condition, motion_model=anny, reference_model=anny, keep_in_view=False)
    assert placement == {"depth_factor": 1.0, "path_factor": 1.0, "scale": placement["scale"]}
    pelvis = cond.posed(anny).joints[:, 0]
    travel = float((pelvis[-1] - pelvis[0])[[0, 2]].norm())
    source = run.posed(anny).joints[:, 0]
    assert travel == pytest.approx(float((source[-1] - source[0])[[0, 2]].norm()) * placement["scale"], rel=1e-3)


def test_avatar_texture_comes_from_the_person(anny, reference, run):
    from studio.texture import AvatarRenderer, build_avatar

    image, ref = reference
    size = output_size(image.shape[:2], 256)
    avatar = build_avatar(image, ref.keypoints.mask[0], ref.condition, body_model=anny, output_size=size)
    assert avatar.texture_coords.shape == (anny.num_vertices, 2)
    px = np.round(avatar.texture_coords).astype(int)
    assert (ref.keypoints.mask[0][px[:, 1], px[:, 0]] > 127).all()  # every texel samples the person
    assert 0.2 < avatar.visible_fraction < 0.8
    cond, _ = transfer_motion(run[:4], ref.condition, motion_model=anny, reference_model=anny, image_size=size)
    renderer = AvatarRenderer(avatar, anny, output_size=size)
    frames = renderer.render(cond)
    renderer.release()
    assert frames.shape == (4, *size, 3) and frames.dtype == np.uint8
    # The person is drawn: frames differ from the background where the body is.
    maps = cond.render(("mask",), body_model=anny)
    body = maps["mask"] > 0
    diff = np.abs(frames.astype(int) - avatar.background.astype(int)).sum(-1)
    assert diff[body].mean() > 20 and diff[~body].mean() < 3


def test_backend_resolution():
    from studio.registry import resolve

    assert resolve("animate", "mesh", None)[0].name == "mesh"
    cls, reason = resolve("animate", "auto", None)
    assert cls.name == "mesh" and "no pipeline weights found" in reason
    with pytest.raises(StudioError, match="champ.*cannot run: no weights folder.*--weights"):
        resolve("animate", "champ", None)
    with pytest.raises(StudioError, match="unknown backend 'magic' for animate; choose auto or one of .*mesh"):
        resolve("animate", "magic", None)


@pytest.mark.slow
def test_animate_command_with_bvh_side_by_side_and_guidance(tmp_path):
    out, sbs, guide = tmp_path / "a.mp4", tmp_path / "sbs.mp4", tmp_path / "g.mp4"
    r = studio("animate", MEDIA / "ref_sitting.jpg", MEDIA / "cmu_02_03_run.bvh", "-o", out, "--size", "192", "--side-by-side", sbs, "--guidance-out", guide)
    assert r.returncode == 0, r.stderr
    assert "backend: mesh" in r.stderr
    frames = list(read_video_frames(out))
    assert len(frames) == 44 and frames[0].shape == (128, 192, 3)
    assert len(list(read_video_frames(sbs))) == 44 and len(list(read_video_frames(guide))) == 44
    settings = json.loads(out.with_suffix(".json").read_text())
    assert settings["backend"] == "mesh" and settings["frames"] == 44 and settings["output_size"] == [128, 192]
    assert not (tmp_path / "a.mp4.partial").exists()


def test_animate_resumes_from_finished_chunks(tmp_path, monkeypatch):
    from pipelines.mesh import MeshPipeline
    from studio.animate import AnimateConfig, animate
    from studio.body import load_body_model

    monkeypatch.setattr(MeshPipeline, "chunk_frames", 8)

    model = load_body_model("anny")
    out = tmp_path / "r.mp4"
    calls = []

    class Stop(Exception):
        pass

    def interrupt_after_two_chunks(n):
        calls.append(n)
        if len(calls) == 3:  # 1 (reference) + two chunks
            raise Stop

    config = AnimateConfig(size=128)
    motion = MEDIA / "cmu_02_03_run.bvh"
    with pytest.raises(Stop):
        animate(MEDIA / "ref_sitting.jpg", motion, out, config=config, body_model=model, on_frames=interrupt_after_two_chunks)
    assert not out.exists()
    partial = tmp_path / "r.mp4.partial"
    assert len(list(partial.glob("chunk_*.npy"))) == 2
    result = animate(MEDIA / "ref_sitting.jpg", motion, out, config=config, body_model=model, resume=True)
    assert any("resumed: 2 of 6 chunks" in n for n in result.notes)
    assert len(list(read_video_frames(out))) == 44 and not partial.exists()


@pytest.mark.slow
def test_animate_bad_inputs_are_one_line_and_leave_nothing(tmp_path):
    out = tmp_path / "a.mp4"
    from studio.media import write_image

    sky = write_image(tmp_path / "sky.png", np.tile(np.linspace(60, 200, 240, dtype=np.uint8)[:, None, None], (1, 320, 3)))
    assert_one_line_error(studio("animate", sky, MEDIA / "cmu_02_03_run.bvh", "-o", out), "no person", out)
    bad = tmp_path / "bad.bvh"
    bad.write_text("HIERARCHY\nROOT Hips\n{")
    assert_one_line_error(studio("animate", MEDIA / "ref_sitting.jpg", bad, "-o", out), "not a valid BVH", out)
    notes = tmp_path / "motion.txt"
    notes.write_text("x")
    assert_one_line_error(studio("animate", MEDIA / "ref_sitting.jpg", notes, "-o", out), "unsupported motion", out)
    assert_one_line_error(studio("animate", MEDIA / "ref_sitting.jpg", MEDIA / "cmu_02_03_run.bvh", "-o", tmp_path / "a.gif"), ".mp4", tmp_path / "a.gif")
    assert_one_line_error(studio("animate", MEDIA / "ref_sitting.jpg", MEDIA / "cmu_02_03_run.bvh", "-o", out, "--backend", "champ"), "no weights folder", out)
    frames = [np.full((120, 160, 3), 90, np.uint8)] * 5
    from studio.media import VideoWriter

    nobody = tmp_path / "nobody.mp4"
    with VideoWriter(nobody, fps=10) as w:
        for f in frames:
            w.write(f)
    assert_one_line_error(studio("animate", MEDIA / "ref_sitting.jpg", nobody, "-o", out), "no person found in any", out)
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.slow
def test_two_people_reference_is_said(tmp_path):
    from studio.media import write_image

    frame = next(iter(VideoReader(MEDIA / "motion_two_people.mp4", max_side=640)))
    image = write_image(tmp_path / "two.png", frame)
    out = tmp_path / "two.mp4"
    r = studio("animate", image, MEDIA / "cmu_02_03_run.bvh", "-o", out, "--size", "128")
    assert r.returncode == 0, r.stderr
    assert "2 people in the reference; animating person 0" in r.stderr


@pytest.mark.slow
def test_ctrl_c_exits_130_leaves_no_video_and_resume_finishes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "c.mp4"
    args = [sys.executable, "-m", "studio.cli", "animate", str(MEDIA / "ref_sitting.jpg"), str(MEDIA / "cmu_02_03_run.bvh"), "-o", str(out), "--size", "128"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    partial = tmp_path / "c.mp4.partial"
    deadline = time.time() + 120
    while not list(partial.glob("chunk_*.npy")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not out.exists()
    r = studio("animate", MEDIA / "ref_sitting.jpg", MEDIA / "cmu_02_03_run.bvh", "-o", out, "--size", "128", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed:" in r.stderr and len(list(read_video_frames(out))) == 44
