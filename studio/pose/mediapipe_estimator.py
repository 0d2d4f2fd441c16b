"""The embedded pose estimator: MediaPipe 0.10.21's legacy solutions, whose models ship in the wheel.

Body: ``solutions.pose`` (33 landmarks with visibility, metric world landmarks, person segmentation),
or ``solutions.holistic`` when hands or face are wanted (the same body model plus 2x21 hand and 468
face landmarks). Videos run in tracking mode. MediaPipe follows one person; to find several, studio
runs the detector again with each found person greyed out, and to follow a chosen person through a
video it greys out everything outside a region of interest that moves with that person.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator

import numpy as np

from studio.body.joints import JOINT_INDEX
from studio.errors import StudioError
from studio.pose.keypoints import Keypoints

logger = logging.getLogger(__name__)

# MediaPipe pose landmark index -> studio joint (person's left/right in both).
_BODY = {
    0: "nose", 2: "left_eye", 5: "right_eye", 7: "left_ear", 8: "right_ear",
    11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow",
    15: "left_wrist", 16: "right_wrist", 17: "left_pinky1", 18: "right_pinky1",
    19: "left_index1", 20: "right_index1", 21: "left_thumb2", 22: "right_thumb2",
    23: "left_hip", 24: "right_hip", 25: "left_knee", 26: "right_knee", 27: "left_ankle", 28: "right_ankle",
    29: "left_heel", 30: "right_heel", 31: "left_big_toe", 32: "right_big_toe",
}  # fmt: skip
# MediaPipe hand landmark index -> studio finger joint (without the side prefix).
_HAND = {
    0: "wrist", 1: "thumb1", 2: "thumb2", 3: "thumb3", 4: "thumb_tip",
    5: "index1", 6: "index2", 7: "index3", 8: "index_tip", 9: "middle1", 10: "middle2", 11: "middle3",
    12: "middle_tip", 13: "ring1", 14: "ring2", 15: "ring3", 16: "ring_tip",
    17: "pinky1", 18: "pinky2", 19: "pinky3", 20: "pinky_tip",
}  # fmt: skip
# Face-mesh vertices that refine the head's keypoints when the face is tracked.
_FACE = {"nose": (1,), "right_eye": (33, 133), "left_eye": (362, 263)}

# The studio joints MediaPipe's body model observes.
BODY_JOINTS: tuple[str, ...] = tuple(_BODY.values())
_BODY_SRC = np.array(list(_BODY))
_BODY_DST = np.array([JOINT_INDEX[n] for n in _BODY.values()])
_GREY = 127


@dataclasses.dataclass
class _Detection:
    keypoints: Keypoints  # T=1
    box: np.ndarray  # [4] x0, y0, x1, y1 of the confident landmarks

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


@contextlib.contextmanager
def _quiet_native_logs() -> Iterator[None]:
    """MediaPipe's C++ side writes glog/absl lines to stderr on start-up; keep them off the terminal."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    yield


class MediaPipeEstimator:
    """studio's embedded ``PoseEstimator``.

    Args:
        hands: track both hands (switches to MediaPipe holistic).
        face: track the face mesh and use it to refine the nose and eyes (holistic).
        max_people: how many people to look for when choosing whom to follow.
        min_confidence: MediaPipe's detection and tracking thresholds.
    """

    name = "mediapipe"

    def __init__(self, *, hands: bool = False, face: bool = False, max_people: int = 4, min_confidence: float = 0.5) -> None:
        with _quiet_native_logs():
            import mediapipe  # noqa: F401  (fail here, clearly, if it is missing)
        self.hands = hands
        self.face = face
        self.max_people = max_people
        self.min_confidence = min_confidence
        self.num_people = 0
        self.person = 0
        self._graphs: dict = {}

    # -- MediaPipe graphs (built once per estimator, reset between videos) -------------------------
    def _solution(self, *, static: bool, segmentation: bool):
        key = ("static" if static else "tracking", segmentation)
        graph = self._graphs.get(key)
        if graph is None:
            import mediapipe as mp

            common = {
                "static_image_mode": static,
                "model_complexity": 1,  # the only body model bundled in the wheel
                "enable_segmentation": segmentation,
                "min_detection_confidence": self.min_confidence,
                "min_tracking_confidence": self.min_confidence,
            }
            with _quiet_native_logs():
                solution = mp.solutions.holistic.Holistic if self.hands or self.face else mp.solutions.pose.Pose
                graph = self._graphs[key] = solution(**common)
        else:
            graph.reset()
        return graph

    def _detector(self):
        graph = self._graphs.get("detector")
        if graph is None:
            import mediapipe as mp

            with _quiet_native_logs():
                graph = self._graphs["detector"] = mp.solutions.pose.Pose(
                    static_image_mode=True, model_complexity=1, min_detection_confidence=self.min_confidence
                )
        return graph

    def close(self) -> None:
        """Free the MediaPipe graphs."""
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()

    # -- conversion -------------------------------------------------------------------------------
    def _to_keypoints(self, result, image_size: tuple[int, int], *, with_mask: bool) -> Keypoints:
        h, w = image_size
        kp = Keypoints.empty(1, image_size)
        if result.pose_landmarks is None:
            return kp
        lm = np.array([[p.x, p.y, p.visibility] for p in result.pose_landmarks.landmark], np.float32)
        kp.points[0, _BODY_DST] = lm[_BODY_SRC, :2] * (w, h)
        kp.confidence[0, _BODY_DST] = np.clip(lm[_BODY_SRC, 2], 0.0, 1.0)
        world = getattr(result, "pose_world_landmarks", None)
        if world is not None:
            wl = np.array([[p.x, p.y, p.z] for p in world.landmark], np.float32)
            kp.world[0, _BODY_DST] = wl[_BODY_SRC]
            kp.world_confidence[0, _BODY_DST] = kp.confidence[0, _BODY_DST]
        kp.present[0] = True
        if self.hands:
            self._add_hands(kp, result, image_size)
        if self.face and getattr(result, "face_landmarks", None) is not None:
            face = np.array([[p.x, p.y] for p in result.face_landmarks.landmark], np.float32) * (w, h)
            for name, ids in _FACE.items():
                kp.points[0, JOINT_INDEX[name]] = face[list(ids)].mean(0)
                kp.confidence[0, JOINT_INDEX[name]] = 0.95
        if with_mask and getattr(result, "segmentation_mask", None) is not None:
            kp.mask = (np.clip(result.segmentation_mask, 0.0, 1.0) * 255).astype(np.uint8)[None]
        return kp

    def _add_hands(self, kp: Keypoints, result, image_size: tuple[int, int]) -> None:
        h, w = image_size
        hands = [getattr(result, f"{s}_hand_landmarks", None) for s in ("left", "right")]
        hands = [np.array([[p.x, p.y] for p in hnd.landmark], np.float32) * (w, h) for hnd in hands if hnd is not None]
        wrists = {s: kp.points[0, JOINT_INDEX[f"{s}_wrist"]] for s in ("left", "right")}
        for pts in hands:
            # Assign each hand to the body wrist it starts at (robust to any left/right naming).
            side = min(wrists, key=lambda s: float(np.linalg.norm(pts[0] - wrists[s])))
            for i, name in _HAND.items():
                if name == "wrist":
                    continue
                j = JOINT_INDEX[f"{side}_{name}"]
                kp.points[0, j] = pts[i]
                kp.confidence[0, j] = 0.9
                kp.world_confidence[0, j] = 0.0  # hand landmarks have no metric 3D here

    @staticmethod
    def _box(kp: Keypoints) -> np.ndarray:
        good = kp.confidence[0] > 0.5
        if good.sum() < 3:
            good = kp.confidence[0] > 0
        pts = kp.points[0, good]
        return np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)

    # -- people -----------------------------------------------------------------------------------
    def find_people(self, image: np.ndarray) -> list[_Detection]:
        """Everyone MediaPipe can find in an image, largest first (by the box of their landmarks)."""
        found: list[_Detection] = []
        work = image
        detector = self._detector()
        for _ in range(self.max_people):
            kp = self._to_keypoints(detector.process(work), image.shape[:2], with_mask=False)
            if not kp.present[0]:
                break
            det = _Detection(kp, self._box(kp))
            if det.area < 1.0:
                break
            found.append(det)
            work = _grey_out(work, [det.box])
        return sorted(found, key=lambda d: -d.area)

    def _choose(self, people: list[_Detection], person: int | None) -> _Detection:
        self.num_people = len(people)
        index = 0 if person is None else person
        if not 0 <= index < len(people):
            raise StudioError(
                f"--person {index}: found {len(people)} {'person' if len(people) == 1 else 'people'} "
                f"(numbered 0..{len(people) - 1}, largest first)"
            )
        self.person = index
        if len(people) > 1:
            logger.info(
                "found %d people; following person %d (%s; numbered largest first, choose with --person)",
                len(people), index, "the largest" if index == 0 else "as asked",
            )  # fmt: skip
        return people[index]

    # -- public API -------------------------------------------------------------------------------
    def estimate_image(self, image: np.ndarray, *, person: int | None = None, mask: bool = True) -> Keypoints:
        """Keypoints (T=1) of one person in an RGB image [H, W, 3] uint8.

        Raises StudioError when the image shows nobody.
        """
        people = self.find_people(image)
        if not people:
            raise StudioError("no person found in the image")
        target = self._choose(people, person)
        others = [p.box for p in people if p is not target]
        work = _grey_out(image, others, keep=target.box) if others else image
        solution = self._solution(static=True, segmentation=mask)
        kp = self._to_keypoints(solution.process(work), image.shape[:2], with_mask=mask)
        if not kp.present[0]:  # the richer graph missed what the detector saw: keep the detector's body
            kp = target.keypoints
        kp.num_people = len(people)
        return kp

    def estimate_video(self, frames: Iterable[np.ndarray], *, fps: float, person: int | None = None) -> Iterator[Keypoints]:
        """Track one person through RGB frames; yields one Keypoints (T=1) per frame, with
        ``present`` False where nobody was found. Raises StudioError for an empty video."""
        roi: np.ndarray | None = None  # region followed when several people are in view
        chosen = False
        lost = 0
        any_frame = False
        tracker = self._solution(static=False, segmentation=False)
        for frame in frames:
            any_frame = True
            size = frame.shape[:2]
            if not chosen:
                people = self.find_people(frame)
                if not people:
                    kp = Keypoints.empty(1, size, fps=fps)
                    yield kp
                    continue
                target = self._choose(people, person)
                chosen = True
                if len(people) > 1:
                    roi = target.box
            work = frame
            if roi is not None:
                work = _keep_only(frame, _expand(roi, 0.25 + 0.1 * min(lost, 10), size))
            kp = self._to_keypoints(tracker.process(work), size, with_mask=False)
            kp.fps = fps
            kp.num_people = self.num_people
            if kp.present[0]:
                lost = 0
                if roi is not None:
                    roi = self._box(kp)
            else:
                lost += 1
            yield kp
        if not any_frame:
            raise StudioError("the video has no frames")


def _expand(box: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray:
    """A box grown by ``margin`` of its size on every side, clipped to the image."""
    h, w = size
    bw, bh = box[2] - box[0], box[3] - box[1]
    m = margin * max(bw, bh)
    return np.array([max(0, box[0] - m), max(0, box[1] - m), min(w, box[2] + m), min(h, box[3] + m)])


def _grey_out(image: np.ndarray, boxes: list[np.ndarray], *, keep: np.ndarray | None = None) -> np.ndarray:
    """A copy of the image with each box (a little enlarged) greyed, except inside ``keep``."""
    h, w = image.shape[:2]
    out = image.copy()
    for b in boxes:
        x0, y0, x1, y1 = _expand(b, 0.12, (h, w)).astype(int)
        out[y0:y1, x0:x1] = _GREY
    if keep is not None:
        x0, y0, x1, y1 = _expand(keep, 0.05, (h, w)).astype(int)
        out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out


def _keep_only(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A grey image showing only the inside of ``box``."""
    x0, y0, x1, y1 = np.asarray(box).astype(int)
    out = np.full_like(image, _GREY)
    out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out
