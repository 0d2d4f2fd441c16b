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


@pytest.fixture(scope="module")
def sitting_avatar(anny, reference):
    from studio.texture import build_avatar

    image, ref = reference
    size = output_size(image.shape[:2], 256)
    return build_avatar(image, ref.keypoints.mask[0], ref.condition, body_model=anny, output_size=size), size


def test_avatar_texture_comes_from_the_person(anny, reference, run, sitting_avatar):
    from studio.texture import AvatarRenderer

    image, ref = reference
    avatar, size = sitting_avatar
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


def test_texture_is_symmetric_part_aware_and_consistent(anny, reference, sitting_avatar):
    """Hidden vertices take a well-seen vertex's pixel (never a pixel between parts); a part seen far
    less than its left/right twin takes the twin's texture; no part is textured from pixels far from
    its own colour (the sitting photo's leggings are dark: no pale knees)."""
    from studio.body.joints import BODY_PART_NAMES
    from studio.texture import _mirror_part, mirror_vertices

    image, ref = reference
    avatar, _ = sitting_avatar
    rest = anny.rest_vertices(ref.condition.body)[0].numpy()
    mirror, parts = mirror_vertices(rest), anny.part_labels.numpy()
    lut = _mirror_part(parts, mirror)
    assert (parts[mirror] == np.array([lut[p] for p in range(parts.max() + 1)])[parts]).mean() > 0.97
    pairs = {BODY_PART_NAMES[k]: BODY_PART_NAMES[v] for k, v in _mirror_part(parts, mirror).items()}
    assert pairs["left_thigh"] == "right_thigh" and pairs["right_forearm"] == "left_forearm" and pairs["head"] == "head"
    # Every texel is a pixel some vertex projects to (no means of positions), snapped into the person.
    px = np.round(avatar.texture_coords).astype(int)
    colours = image[px[:, 1], px[:, 0]].astype(float).mean(1)
    knees = np.isin(parts, [BODY_PART_NAMES.index(n) for n in ("left_thigh", "right_thigh", "left_calf", "right_calf")])
    assert np.median(colours[knees]) < 80  # dark leggings
    assert (colours[knees] > 150).mean() < 0.03  # hardly any pale texels on the legs (before: 0.16)
    forearms = np.isin(parts, [BODY_PART_NAMES.index(n) for n in ("left_forearm", "right_forearm")])
    assert (colours[forearms] < 60).mean() < 0.03  # bare forearms: no dark streaks from the leggings (before: 0.06)


def test_self_reenactment_keeps_the_video_placement(anny, reference, run):
    """The photo as frame k of the motion: frame k reproduces the photo's fit exactly, and the others
    follow the motion in the camera's space (here: the run's own root path, turned with the camera)."""
    import cv2

    from studio.animate.transfer import reenact_motion

    import dataclasses

    _, ref = reference
    # The run seen by the photo's camera, so both fits share a focal length (depth is rescaled by
    # their ratio otherwise) and the result is a rigid move of the motion.
    motion = dataclasses.replace(run[:6], camera=ref.condition.camera.index([0] * 6))
    k = 2
    size = ref.condition.camera.image_size
    cond = reenact_motion(motion, ref.condition, frame=k, motion_model=anny, reference_model=anny)
    ref_joints = ref.condition.posed(anny).joints[0]
    joints = cond.posed(anny).joints
    assert torch.allclose(joints[k], ref_joints, atol=1e-4)
    assert cond.camera.image_size == size and torch.allclose(cond.camera.extrinsics, ref.condition.camera.extrinsics.expand(6, 4, 4))
    # Pelvis travel between frames equals the motion's (same camera, same focal scale: rigid).
    m = motion.posed(anny).joints[:, 0]
    assert float((joints[5, 0] - joints[0, 0]).norm()) == pytest.approx(float((m[5] - m[0]).norm()), rel=0.05, abs=0.01)
    # A camera turn moves the body with it: the camera-space pelvis is the same, the extrinsics turn.
    turns = torch.from_numpy(np.stack([cv2.Rodrigues(np.array([0.0, 0.05 * (t - k), 0.0]))[0] for t in range(6)])).float()
    turned = reenact_motion(motion, ref.condition, frame=k, motion_model=anny, reference_model=anny, camera_turns=turns)
    cam = lambda c: world_to_camera(c.posed(anny).joints, c.camera.extrinsics)  # noqa: E731
    assert torch.allclose(cam(turned)[k], cam(cond)[k], atol=1e-4)
    assert torch.allclose(turned.camera.extrinsics[4, :3, :3], turns[4] @ ref.condition.camera.extrinsics[0, :3, :3], atol=1e-5)
    with pytest.raises(ValueError, match="frame must be in"):
        reenact_motion(motion, ref.condition, frame=6, motion_model=anny, reference_model=anny)


def test_a_photo_is_found_in_its_video(reference, monkeypatch):
    from studio.animate import job
    from studio.animate.job import frame_of_video
    from studio.media import VideoReader

    monkeypatch.setattr(job, "SEARCH_FRAMES", 6)  # decoding the whole clip is the slow part

    frames = [f for _, f in zip(range(4), VideoReader(MEDIA / "motion_dribble.mp4"))]
    assert frame_of_video(frames[3], MEDIA / "motion_dribble.mp4") == 3
    image, _ = reference
    assert frame_of_video(image, MEDIA / "motion_dribble.mp4") is None  # another aspect
    assert frame_of_video(np.ascontiguousarray(frames[0][::-1]), MEDIA / "motion_dribble.mp4") is None  # same aspect, other picture


def test_held_layer_follows_the_forearm():
    """A held object's sprite turns with the elbow -> palm segment and shrinks with the palm's depth."""
    from studio.animate.held import HeldLayer

    sprite = np.zeros((10, 10, 4), np.uint8)
    sprite[..., :3], sprite[..., 3] = 200, 255
    joints = np.array([[0.0, 0.0], [8.0, 0.0], [10.0, 0.0]])  # elbow, wrist, palm along +x
    layer = HeldLayer(sprite=sprite, origin=np.array([10.0, -5.0]), hand="left", joints=joints, palm_depth=2.0, focal=100.0)
    new = np.array([[50.0, 50.0], [50.0, 58.0], [50.0, 60.0]])  # turned 90 degrees, moved
    A = layer.place(new, palm_depth=4.0, focal=100.0)  # twice as far: half the size
    assert np.allclose(A @ [10.0, 0.0, 1.0], [50.0, 60.0])  # the palm goes to the palm
    assert np.allclose(A @ [20.0, 0.0, 1.0], [50.0, 65.0])  # 10 px along the forearm -> 5 px along the new one
    frame = np.zeros((100, 100, 3), np.uint8)
    layer.composite(frame, A)
    ys, xs = np.nonzero(frame[..., 0] > 100)
    assert 55 <= ys.mean() <= 70 and 45 <= xs.mean() <= 55


@pytest.mark.slow
def test_held_ball_is_found_and_moves_with_the_hand(anny, run):
    """The bundled held-ball photo: the ball next to his left hand is found (and nothing in the sitting
    photo); animated, the ball is drawn near the hand in every frame, not left in the background."""
    from studio.animate.held import find_held_objects, frame_joints
    from studio.capture import pose_image
    from studio.media import read_image
    from studio.texture import AvatarRenderer, build_avatar

    image = read_image(MEDIA / "ref_held_ball.jpg")
    ref = pose_image(image, body_model=anny)
    held, layers = find_held_objects(image, ref.keypoints.mask[0], ref.condition, body_model=anny)
    assert [layer.hand for layer in layers] == ["left"]
    ys, xs = np.nonzero(held > 127)
    assert 600 < xs.mean() < 1000 and 700 < ys.mean() < 1100  # the ball (about x 760-900, y 820-1000)
    size = output_size(image.shape[:2], 384)
    avatar = build_avatar(image, ref.keypoints.mask[0], ref.condition, body_model=anny, output_size=size)
    avatar.held = layers
    cond, _ = transfer_motion(run[:3], ref.condition, motion_model=anny, reference_model=anny, image_size=size)
    renderer = AvatarRenderer(avatar, anny, output_size=size)
    frames = renderer.render(cond)
    renderer.release()
    uv, _ = frame_joints(dataclasses_replace_size(cond, size), anny, "left")
    for t, frame in enumerate(frames):
        orange = (frame[..., 0].astype(int) - frame[..., 2] > 40) & (frame[..., 0] > 80)
        oy, ox = np.nonzero(orange)
        assert oy.size > 20
        assert np.hypot(ox.mean() - uv[t, 2, 0], oy.mean() - uv[t, 2, 1]) < 0.12 * max(size)


def dataclasses_replace_size(cond, size):
    import dataclasses

    return dataclasses.replace(cond, camera=cond.camera.resized(size))


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
