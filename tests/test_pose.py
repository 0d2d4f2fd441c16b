"""Pose estimation on real media: keypoints, person masks, several people, missing frames."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ASSETS

from studio.body.joints import JOINT_INDEX, NUM_JOINTS
from studio.errors import StudioError
from studio.media import VideoReader, read_image
from studio.pose import Keypoints, fill_gaps, load_estimator

MEDIA = ASSETS / "media"


@pytest.fixture(scope="module")
def estimator():
    est = load_estimator(hands=True, face=True)
    yield est
    est.close()


def test_image_keypoints_and_mask(estimator):
    image = read_image(MEDIA / "ref_sitting.jpg")
    kp = estimator.estimate_image(image)
    assert kp.points.shape == (1, NUM_JOINTS, 2) and kp.image_size == image.shape[:2]
    assert kp.present[0] and kp.num_people == 1
    body = [JOINT_INDEX[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee")]
    assert (kp.confidence[0, body] > 0.5).all()
    h, w = image.shape[:2]
    assert ((kp.points[0, body] >= 0) & (kp.points[0, body] < [w, h])).all()
    # The person's left shoulder is on the image's right for a person facing the camera.
    assert kp.points[0, JOINT_INDEX["left_shoulder"], 0] > kp.points[0, JOINT_INDEX["right_shoulder"], 0]
    # Metric 3D: shoulders about 30-45 cm apart.
    width = np.linalg.norm(kp.world[0, JOINT_INDEX["left_shoulder"]] - kp.world[0, JOINT_INDEX["right_shoulder"]])
    assert 0.2 < width < 0.5
    # The mask covers the person's torso and not the image corner.
    assert kp.mask.shape == (1, h, w)
    for j in body[:4]:
        x, y = kp.points[0, j].astype(int)
        assert kp.mask[0, y, x] > 128
    assert kp.mask[0, 5, 5] < 32
    # Hands were tracked: finger joints have confidence.
    assert kp.confidence[0, JOINT_INDEX["left_index2"]] > 0 or kp.confidence[0, JOINT_INDEX["right_index2"]] > 0


def test_image_without_a_person_is_a_clear_error(estimator):
    rng = np.random.default_rng(0)
    sky = np.clip(np.linspace(90, 200, 480)[:, None, None] + rng.normal(0, 3, (480, 640, 3)), 0, 255).astype(np.uint8)
    with pytest.raises(StudioError, match="no person"):
        estimator.estimate_image(sky)


def first_frame(name: str) -> np.ndarray:
    return next(iter(VideoReader(MEDIA / name, max_side=640)))


def test_several_people_are_found_largest_first_and_chosen(estimator):
    frame = first_frame("motion_two_people.mp4")
    people = estimator.find_people(frame)
    assert len(people) == 2
    assert people[0].area > people[1].area
    centres = [(p.box[0] + p.box[2]) / 2 for p in people]
    assert centres[0] < frame.shape[1] / 2 < centres[1]  # the man (largest) is on the left
    second = estimator.estimate_image(frame, person=1, mask=False)
    assert second.num_people == 2
    x = second.points[0, JOINT_INDEX["left_hip"], 0]
    assert x > frame.shape[1] / 2  # the woman on the right
    with pytest.raises(StudioError, match="--person 5"):
        estimator.estimate_image(frame, person=5)


def test_video_tracking_follows_the_chosen_person():
    est = load_estimator()
    frames = list(VideoReader(MEDIA / "motion_two_people.mp4", max_side=480))[:12]
    kps = Keypoints.concat(list(est.estimate_video(iter(frames), fps=12.0, person=1)))
    assert len(kps) == 12 and kps.present.all() and est.num_people == 2
    hips = kps.points[:, JOINT_INDEX["left_hip"], 0]
    assert (hips > frames[0].shape[1] / 2).all()  # stays on the woman, on the right
    est.close()


def test_fill_gaps_interpolates_short_gaps_and_holds_long_ones():
    T = 20
    kp = Keypoints.empty(T, (100, 100), fps=10.0)
    kp.points[:, :, 0] = np.arange(T, dtype=np.float32)[:, None]
    kp.confidence[:] = 1.0
    kp.present[:] = True
    kp.present[[4, 5]] = False  # short gap
    kp.present[10:17] = False  # long gap
    kp.present[0] = False  # at the start
    for t in np.flatnonzero(~kp.present):
        kp.points[t] = -1.0
        kp.confidence[t] = 0.0
    filled, missing = fill_gaps(kp, max_gap=3)
    assert missing == 10
    assert filled.points[4, 0, 0] == pytest.approx(4.0) and filled.points[5, 0, 0] == pytest.approx(5.0)
    assert filled.confidence[4, 0] == pytest.approx(0.5)
    assert (filled.confidence[10:17] == 0).all()  # held, not fitted
    assert filled.points[11, 0, 0] == 9.0 and filled.points[15, 0, 0] == 17.0  # the nearest detection
    assert filled.points[0, 0, 0] == 1.0 and filled.confidence[0, 0] == 0.0
    assert (filled.present == kp.present).all()
