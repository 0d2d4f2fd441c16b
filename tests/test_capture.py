"""The capture job on hard footage: small, bent-over, cut-off, lying and upside-down people (made here
from the bundled media by cropping, padding and turning it), tracking through the frame's edge, focal
lengths, the temporal smoother, and the reference cache of `studio animate`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import ASSETS
from test_cli import studio

from studio.body.joints import JOINT_INDEX
from studio.media import VideoReader, read_image, write_image

MEDIA = ASSETS / "media"
LIMBS = [JOINT_INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee", "left_elbow", "right_elbow")]


# -- hard test images, made from the bundled media -------------------------------------------------
def video_frame(name: str, index: int, max_side: int | None = None) -> np.ndarray:
    for i, frame in enumerate(VideoReader(MEDIA / name, max_side=max_side)):
        if i == index:
            return frame.copy()
    raise IndexError(index)


def small_person() -> np.ndarray:
    """The man bending over for the ball (two-people clip, frame 4), about a sixth of the width of a
    2048x2048 frame whose background is the street of the sitting photo, scaled up."""
    frame = video_frame("motion_two_people.mp4", 4)  # 1080x1920
    person = frame[500:1500, 0:560]
    scale = 340 / person.shape[1]
    import cv2

    person = cv2.resize(person, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    street = read_image(MEDIA / "ref_sitting.jpg")[:250, 640:960]  # trees, houses and cars, nobody
    out = cv2.resize(street, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    out[1300 : 1300 + person.shape[0], 1500 : 1500 + person.shape[1]] = person
    return out


def bent_over() -> np.ndarray:
    """The man bent over, hands down at the ball, cut from the two-people clip."""
    return video_frame("motion_two_people.mp4", 4)[:, :700].copy()


def cut_by_edge() -> np.ndarray:
    """The sitting woman with the frame's left edge cutting through her right leg and arm."""
    return read_image(MEDIA / "ref_sitting.jpg")[:, 300:].copy()


def lying() -> np.ndarray:
    """The sitting photo turned a quarter turn: she lies along the frame."""
    return np.ascontiguousarray(np.rot90(read_image(MEDIA / "ref_sitting.jpg"), 1))


def upside_down() -> np.ndarray:
    """The dribbling man upside down."""
    return np.ascontiguousarray(video_frame("motion_dribble.mp4", 0, 960)[::-1, ::-1])


HARD_CASES = {"small": small_person, "bent_over": bent_over, "cut_by_edge": cut_by_edge, "lying": lying, "upside_down": upside_down}


def fitted_overlap(result, anny) -> tuple[float, float]:
    """How well the fitted body lies on the person: the mean distance (as a share of the person's
    size) from the detected limb keypoints to the fitted joints' projections, and the IoU of the
    rendered body with the person mask."""
    from studio.condition import project, world_to_camera

    kp, cond = result.keypoints, result.condition
    uv = project(world_to_camera(cond.posed(anny).joints, cond.camera.extrinsics), cond.camera.K)[0].numpy()
    seen = [j for j in LIMBS if kp.confidence[0, j] > 0.5]
    pts = kp.points[0, seen]
    size = float(np.ptp(pts, axis=0).max())
    error = float(np.linalg.norm(uv[seen] - pts, axis=-1).mean()) / size
    body = cond.render(("mask",), body_model=anny)["mask"][0] > 127
    person = kp.mask[0] > 127
    return error, float((body & person).sum() / max((body | person).sum(), 1))


@pytest.fixture(scope="module")
def estimator():
    from studio.pose import load_estimator

    est = load_estimator(hands=True, face=True)
    yield est
    est.close()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HARD_CASES))
def test_hard_photos_are_found_and_fitted(case, estimator, anny):
    from studio.capture import pose_image

    image = HARD_CASES[case]()
    result = pose_image(image, body_model=anny, estimator=estimator)
    kp = result.keypoints
    h, w = image.shape[:2]
    torso = [JOINT_INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    assert (kp.confidence[0, torso] > 0.5).all()
    inside = (kp.points[0, torso] >= 0).all() and (kp.points[0, torso] < [w, h]).all()
    assert inside
    error, iou = fitted_overlap(result, anny)
    assert error < 0.12, f"{case}: the fitted joints lie {error:.0%} of the person's size off the keypoints"
    assert iou > 0.45, f"{case}: the fitted body covers the person mask with IoU {iou:.2f}"
    if case == "small":
        assert any("second scale" in note for note in result.notes)
        box = kp.points[0, torso]
        assert (box[:, 0] > 1400).all() and (box[:, 1] > 1250).all()  # where the man was pasted
    if case == "cut_by_edge":  # keypoints beyond the left edge keep their place and get no weight
        outside = kp.points[0, :, 0] < 0
        assert outside.any() and (kp.confidence[0, outside] == 0).all() and (kp.world_confidence[0, outside] == 0).all()


@pytest.mark.slow
def test_the_hard_photos_through_studio_pose(tmp_path):
    """The command on the small person says how it was found, and writes a preview."""
    image = write_image(tmp_path / "small.png", small_person())
    r = studio("pose", image, "-o", tmp_path / "small.npz", "--preview", tmp_path / "small_fit.png")
    assert r.returncode == 0, r.stderr
    assert "found only at a second scale" in r.stderr
    assert (tmp_path / "small_fit.png").exists()
    settings = json.loads((tmp_path / "small.json").read_text())
    assert settings["focal_source"] == "search" and any("second scale" in n for n in settings["notes"])


def test_views_map_back_to_the_frame():
    from studio.pose.views import View, tiles

    frame = np.zeros((60, 90, 3), np.uint8)
    frame[20:30, 40:50] = 255  # a white square
    for turns in range(4):
        view = View.around(np.array([30.0, 10.0, 60.0, 40.0]), margin=0.5, side=120, turns=turns)
        shown = view.warp(frame)
        assert shown.shape == (120, 120, 3)
        centre = view.from_frame(np.array([[45.0, 25.0]]))[0]
        assert shown[int(centre[1]), int(centre[0])].min() > 200  # the square's centre, where it should be
        assert np.allclose(view.to_frame(view.from_frame(np.array([[3.0, 7.0], [80.0, 55.0]]))), [[3.0, 7.0], [80.0, 55.0]], atol=1e-6)
        # World landmarks turn with the view: a vector pointing right in the frame points right after the way back.
        right = view.from_frame(np.array([[50.0, 25.0]]))[0] - centre
        world = np.array([[right[0], right[1], 0.0]])
        assert np.allclose(view.world_to_frame(world)[0, :2] / np.linalg.norm(right), [1.0, 0.0], atol=1e-6)
    outside = View.around(np.array([-20.0, 10.0, 20.0, 50.0]), margin=0.0, side=40).warp(frame)
    assert (outside[:, :20] == 127).all()  # beyond the frame: grey, not stretched edge pixels
    boxes = tiles((2048, 2048))
    assert len(boxes) == 9 and all(b[2] - b[0] == 1024 for b in boxes)
    covered = np.zeros((2048, 2048), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, int):
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_keypoints_outside_the_frame_get_no_weight_and_keep_their_place():
    from studio.pose import Keypoints
    from studio.pose.mediapipe_estimator import _in_frame, _unmirror

    kp = Keypoints.empty(1, (100, 200))
    kp.points[0, :3] = [[-15.0, 50.0], [50.0, 50.0], [210.0, 120.0]]
    kp.confidence[0, :3] = 0.9
    kp.world_confidence[0, :3] = 0.9
    out = _in_frame(kp)
    assert list(out.confidence[0, :3]) == [0.0, pytest.approx(0.9), 0.0] and out.world_confidence[0, 0] == 0.0
    assert out.points[0, 0, 0] == -15.0 and out.points[0, 2, 1] == 120.0  # not clamped to the border
    kp.points[0, JOINT_INDEX["left_wrist"]] = [30.0, 40.0]
    kp.world[0, JOINT_INDEX["left_wrist"]] = [0.2, 0.1, -0.3]
    back = _unmirror(kp, 200)
    assert np.allclose(back.points[0, JOINT_INDEX["right_wrist"]], [170.0, 40.0])
    assert np.allclose(back.world[0, JOINT_INDEX["right_wrist"]], [-0.2, 0.1, -0.3])


@pytest.mark.slow
def test_tracking_survives_the_person_leaving_and_re_entering_the_frame(tmp_path):
    """The dribble clip slid sideways: the man walks out through the right edge and comes back."""
    from studio.pose import Keypoints, load_estimator

    frames = list(VideoReader(MEDIA / "motion_dribble.mp4", max_side=480))  # 480x270
    h, w = frames[0].shape[:2]
    shifts = [0, 0, 60, 120, 180, 240, 300, 300, 300, 240, 180, 120, 60, 0, 0, 0]
    moved = []
    for i, s in enumerate(shifts):
        canvas = np.full((h, w + 300, 3), 110, np.uint8)
        canvas[:, 300 - s : 300 - s + w] = frames[i]
        moved.append(canvas[:, 300:].copy())  # the frame's window is fixed; the man slides right and out
    est = load_estimator()
    kps = Keypoints.concat(list(est.estimate_video(iter(moved), fps=12.0)))
    assert kps.present[:2].all() and not kps.present[6:9].any()  # gone while fully outside
    assert kps.present[13:].all()  # found again when he is back
    partly = [i for i, s in enumerate(shifts) if 60 <= s <= 180 and kps.present[i]]
    assert partly, "tracked while partly outside"
    for i in partly:  # joints past the right edge: positions kept, no weight
        beyond = kps.points[i, :, 0] >= w
        assert (kps.confidence[i, beyond] == 0).all()
    est.close()


# -- focal length ---------------------------------------------------------------------------------
def test_exif_focal_length(tmp_path):
    from PIL import Image

    from studio.fit.focal import exif_focal_length

    image = Image.fromarray(np.full((300, 400, 3), 128, np.uint8))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26  # 26 mm in 35 mm terms: a phone's main camera
    image.save(tmp_path / "phone.jpg", exif=exif)
    image.save(tmp_path / "plain.jpg")
    expected = 26 / 43.2666 * np.hypot(300, 400)
    assert exif_focal_length(tmp_path / "phone.jpg", (300, 400)) == pytest.approx(expected)
    assert exif_focal_length(tmp_path / "plain.jpg", (300, 400)) is None


def test_focal_search_finds_a_wide_lens_and_keeps_the_default_without_evidence(anny):
    from studio.camera import default_focal_length
    from studio.fit import BodyFitter, FitConfig
    from studio.fit.evaluation import synthetic_keypoints
    from studio.fit.focal import estimate_focal_length, focal_from_fov
    from studio.motion import import_motion

    motion = import_motion(MEDIA / "cmu_02_03_run.bvh", anny, fps=30.0)[5:11]
    for fov, distance in ((90.0, 1.8), (30.0, 7.0)):
        focal = focal_from_fov(fov, (480, 640))
        camera = BodyFitter(anny, FitConfig(focal_length=focal)).camera((480, 640), motion.num_frames)
        body = dict(motion.body)
        body["transl"] = body["transl"] + torch.tensor([0.0, 0.0, -distance])
        truth = dataclasses.replace(motion, body=body, camera=camera)
        kp = synthetic_keypoints(truth, anny, noise_px=1.0, world_noise_m=0.01, seed=0)
        estimate = estimate_focal_length(kp)
        assert estimate.source == "search"
        if fov == 90.0:  # close to a wide lens: the perspective shows, within 20%
            assert abs(estimate.focal / focal - 1) < 0.2
        else:  # far from a long lens: little to go on, and the estimate moves towards the truth from the default
            assert default_focal_length((480, 640)) * 0.95 < estimate.focal < focal * 1.1
    kp.world_confidence[:] = 0
    assert estimate_focal_length(kp).source == "default"


@pytest.mark.slow
def test_studio_pose_reads_exif_and_focal_overrides(tmp_path):
    from PIL import Image

    photo = Image.open(MEDIA / "ref_sitting.jpg")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 35
    photo.save(tmp_path / "exif.jpg", exif=exif)
    r = studio("pose", tmp_path / "exif.jpg", "-o", tmp_path / "a.npz")
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "a.json").read_text())
    assert settings["focal_source"] == "exif" and settings["focal_px"] == pytest.approx(35 / 43.2666 * np.hypot(640, 960), rel=1e-4)
    assert "from the photo's EXIF" in r.stderr
    r = studio("pose", tmp_path / "exif.jpg", "-o", tmp_path / "b.npz", "--focal", "777")
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "b.json").read_text())
    assert settings["focal_source"] == "given" and settings["focal_px"] == pytest.approx(777.0)


# -- temporal smoothing ---------------------------------------------------------------------------
def test_smoother_removes_jitter_keeps_fast_motion_and_streams_like_the_whole_video(walk):
    from studio.condition import HumanCondition
    from studio.fit.smoothing import ParameterSmoother, smooth_condition

    T, fps = 60, 30.0
    t = np.arange(T) / fps
    body = {k: v[:1].expand(T, -1).clone() for k, v in walk.body.items()}
    swing = 1.2 * np.sin(2 * np.pi * 2.0 * t)  # a 2 Hz swing of the left elbow, +-1.2 rad: fast
    body["body_pose"][:, 3 * (JOINT_INDEX["left_elbow"] - 1) + 1] = torch.from_numpy(swing).float()
    body["global_orient"][:, 1] = torch.linspace(0.0, 2 * np.pi, T)  # a full turn, through 180 degrees
    clean = HumanCondition(walk.body_model, body, walk.camera.index([0] * T), fps)
    rng = np.random.default_rng(0)
    noisy_body = {k: v + (torch.from_numpy(rng.normal(0, 0.05, v.shape)).float() if k != "transl" else 0) for k, v in body.items()}
    noisy = dataclasses.replace(clean, body=noisy_body)
    smooth = smooth_condition(noisy)
    elbow = 3 * (JOINT_INDEX["left_elbow"] - 1) + 1

    def error(c):
        return float((c.body["body_pose"][:, elbow] - clean.body["body_pose"][:, elbow]).abs().mean())

    assert error(smooth) < 0.75 * error(noisy)  # jitter removed
    amplitude = float(smooth.body["body_pose"][:, elbow].abs().max())
    assert amplitude > 0.9 * 1.2  # the fast swing is kept
    # The turn through 180 degrees comes out as the same rotations (no jump, no unwinding).
    import roma

    R_clean = roma.rotvec_to_rotmat(clean.body["global_orient"])
    R_smooth = roma.rotvec_to_rotmat(smooth.body["global_orient"])
    assert float(roma.rotmat_geodesic_distance(R_clean, R_smooth).max()) < 0.1
    streamer = ParameterSmoother(fps)
    parts = [streamer.push(noisy[i : i + 7], np.ones(len(noisy[i : i + 7]))) for i in range(0, T, 7)] + [streamer.finish()]
    streamed = HumanCondition.concat([p for p in parts if p is not None])
    assert streamed.num_frames == T
    for key in smooth.body:
        assert torch.allclose(streamed.body[key], smooth.body[key], atol=2e-3), key


# -- the reference cache of studio animate --------------------------------------------------------
@pytest.mark.slow
def test_animate_reuses_the_reference_fit_and_avatar(tmp_path, monkeypatch):
    from studio.animate import AnimateConfig, animate
    from studio.body import load_body_model
    from studio.media import read_video_frames

    monkeypatch.setenv("STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    model = load_body_model("anny")
    config = AnimateConfig(size=128)
    motion = MEDIA / "cmu_02_03_run.bvh"
    first = animate(MEDIA / "ref_sitting.jpg", motion, tmp_path / "a.mp4", config=config, body_model=model)
    assert not any("from the cache" in n for n in first.notes)
    assert len(list((tmp_path / "cache" / "avatars").glob("*.npz"))) == 3  # the fit, the background, the texture
    second = animate(MEDIA / "ref_sitting.jpg", motion, tmp_path / "b.mp4", config=config, body_model=model)
    assert any("from the cache" in n for n in second.notes)
    a, b = (np.stack(list(read_video_frames(tmp_path / f"{n}.mp4"))).astype(int) for n in "ab")
    assert np.abs(a - b).mean() < 1.0  # the same animation
    monkeypatch.setenv("STUDIO_NO_CACHE", "1")
    third = animate(MEDIA / "ref_sitting.jpg", motion, tmp_path / "c.mp4", config=config, body_model=model)
    assert not any("from the cache" in n for n in third.notes)
