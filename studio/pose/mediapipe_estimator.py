"""The embedded pose estimator: MediaPipe 0.10.21's legacy solutions, whose models ship in the wheel.

Body: ``solutions.pose`` (33 landmarks with visibility, metric world landmarks, person segmentation),
or ``solutions.holistic`` when hands or face are wanted (the same body model plus 2x21 hand and 468
face landmarks). Videos run in tracking mode.

What studio adds around MediaPipe (whose person detector sees the whole frame shrunk to 224 pixels):
- several people: the detector runs again with each person found greyed out;
- a second scale: when nobody is found on the whole frame, the frame turned by quarter turns (a
  lying or upside-down person) and then overlapping tiles of half its shorter side (a small person in
  a large frame) are searched; the result says which found the person;
- refinement: the landmark model runs again on a full-resolution square view around the person
  (``studio.pose.views``), padded with grey beyond the frame, so a small person is seen at the
  frame's full resolution and a person cut by the frame's edge is seen whole;
- the frame's edge: keypoints MediaPipe places outside the frame keep their positions (no clamping)
  but get confidence 0, so the fitter gives them no weight;
- videos: the tracker runs on a view that follows the person (the whole frame, or a crop around a
  small person, re-centred as they move); when it loses them, the search above runs again (every few
  frames while nobody is in view), so tracking survives a person leaving and re-entering the frame;
  a chosen person among several is followed by greying everything outside a box that moves with them.
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
from studio.pose.views import GREY, View, box_overlap, tiles

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
_GREY = GREY
# A person counts as small (tracked in a crop around them) below this share of the frame's shorter side.
SMALL_PERSON = 0.4
# While nobody is tracked, the full search (turns and tiles) runs on every this-many frames.
SEARCH_EVERY = 6


# Left <-> right joint pairs of studio's layout, for mirrored (flipped) views.
def _mirror_index() -> np.ndarray:
    from studio.body.joints import JOINT_NAMES

    out = np.arange(len(JOINT_NAMES))
    for i, name in enumerate(JOINT_NAMES):
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if name.startswith(a) and name.replace(a, b, 1) in JOINT_INDEX:
                out[i] = JOINT_INDEX[name.replace(a, b, 1)]
    return out


_MIRROR = _mirror_index()


@dataclasses.dataclass
class _Detection:
    keypoints: Keypoints  # T=1, frame pixels
    box: np.ndarray  # [4] x0, y0, x1, y1 of the confident landmarks, frame pixels
    how: str = ""  # "" when found on the whole frame, else how (a second scale, the frame turned)
    turns: int = 0  # quarter turns of the view that found the person

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
        search: when nobody is found on the whole frame, also search the frame turned by quarter
            turns and in overlapping tiles (a second scale).
        refine: show the landmark model a full-resolution view around a small chosen person (images).
        flip_average: also run the body model on the mirror image and average the two (images; steadier 3D).
    """

    name = "mediapipe"

    def __init__(
        self,
        *,
        hands: bool = False,
        face: bool = False,
        max_people: int = 4,
        min_confidence: float = 0.5,
        search: bool = True,
        refine: bool = True,
        flip_average: bool = True,
    ) -> None:
        with _quiet_native_logs():
            import mediapipe  # noqa: F401  (fail here, clearly, if it is missing)
        self.hands = hands
        self.face = face
        self.max_people = max_people
        self.min_confidence = min_confidence
        self.search = search
        self.refine = refine
        self.flip_average = flip_average
        self.num_people = 0
        self.person = 0
        self.notes: list[str] = []  # how people were found (a second scale, turned), for the user
        self._graphs: dict = {}

    # -- MediaPipe graphs (built once per estimator, reset between videos) -------------------------
    def _solution(self, *, static: bool, segmentation: bool, holistic: bool | None = None):
        holistic = self.hands or self.face if holistic is None else holistic
        key = ("static" if static else "tracking", segmentation, holistic)
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
                solution = mp.solutions.holistic.Holistic if holistic else mp.solutions.pose.Pose
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
    def _to_keypoints(self, result, image_size: tuple[int, int], *, with_mask: bool, hands: bool | None = None) -> Keypoints:
        """MediaPipe's result on an image of ``image_size`` as keypoints in that image's pixels."""
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
        if self.hands if hands is None else hands:
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

    def _run(self, graph, image: np.ndarray, view: View, *, with_mask: bool = False, hands: bool | None = None, work: np.ndarray | None = None) -> Keypoints:
        """One MediaPipe pass on ``view`` of a frame; keypoints in the frame's pixels, those outside
        the frame with confidence 0."""
        work = view.warp(image) if work is None else work
        kp = self._to_keypoints(graph.process(work), view.size, with_mask=with_mask, hands=hands)
        return _in_frame(_view_to_frame(kp, view, image.shape[:2]))

    @staticmethod
    def _box(kp: Keypoints) -> np.ndarray:
        good = kp.confidence[0] > 0.5
        if good.sum() < 3:
            good = kp.confidence[0] > 0
        if not good.any():
            return np.zeros(4, np.float32)
        pts = kp.points[0, good]
        return np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)

    # -- people -----------------------------------------------------------------------------------
    def find_people(self, image: np.ndarray, *, search: bool | None = None) -> list[_Detection]:
        """Everyone MediaPipe can find in an image, largest first (by the box of their landmarks).

        The whole frame first; when nobody is found there (and ``search``), the frame turned by quarter
        turns, then overlapping tiles (a second scale). Detections found that way say so in ``how``."""
        size = image.shape[:2]
        found = self._find_on(image, View.whole(size))
        if not found and (self.search if search is None else search):
            for turns in (1, 3, 2):
                found = self._find_on(image, View.turned(size, turns), how=f"on the frame turned {90 * turns} degrees")
                if found:
                    break
        if not found and (self.search if search is None else search):
            found = self._find_in_tiles(image)
        return sorted(found, key=lambda d: -d.area)

    def _find_on(self, image: np.ndarray, view: View, *, how: str = "", limit: int | None = None) -> list[_Detection]:
        """People on one view, each found one greyed out before looking again."""
        found: list[_Detection] = []
        work = view.warp(image)
        detector = self._detector()
        for _ in range(limit or self.max_people):
            kp_view = self._to_keypoints(detector.process(work), view.size, with_mask=False, hands=False)
            if not kp_view.present[0]:
                break
            box_view = self._box(kp_view)
            kp = _in_frame(_view_to_frame(kp_view, view, image.shape[:2]))
            det = _Detection(kp, self._box(kp), how, view.turns)
            if det.area < 1.0 or (box_view[2] - box_view[0]) * (box_view[3] - box_view[1]) < 1.0:
                break
            found.append(det)
            work = _grey_out(work, [box_view])
        return found

    def _find_in_tiles(self, image: np.ndarray) -> list[_Detection]:
        """People in overlapping tiles of half the frame's shorter side, at full resolution (a person
        too small for the detector's view of the whole frame); one detection per person."""
        size = image.shape[:2]
        found: list[_Detection] = []
        for tile in tiles(size, tile_fraction=0.5, overlap=0.5):
            side = int(round(tile[2] - tile[0]))
            view = View.around(tile, margin=0.0, side=min(side, 1024))
            for det in self._find_on(image, view, how=f"only at a second scale (in tiles of {side} px)", limit=2):
                same = [i for i, d in enumerate(found) if box_overlap(d.box, det.box) > 0.5]
                if not same:
                    found.append(det)
                elif det.keypoints.confidence.sum() > found[same[0]].keypoints.confidence.sum():
                    found[same[0]] = det  # the tile that shows the person best
        return found

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
        target = people[index]
        if target.how:
            self._note(f"the person was found {target.how}")
        return target

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            logger.info(text)

    # -- public API -------------------------------------------------------------------------------
    def estimate_image(self, image: np.ndarray, *, person: int | None = None, mask: bool = True) -> Keypoints:
        """Keypoints (T=1) of one person in an RGB image [H, W, 3] uint8, in its pixels.

        Raises StudioError when the image shows nobody.
        """
        self.notes = []
        people = self.find_people(image)
        if not people:
            raise StudioError("no person found in the image (also searched turned and at a second scale)" if self.search else "no person found in the image")
        target = self._choose(people, person)
        others = [p.box for p in people if p is not target]
        view = self._view_for(target.box, image.shape[:2], target.turns, margin=0.3) if self.refine else View.whole(image.shape[:2])
        work = view.warp(_grey_out(image, others, keep=target.box) if others else image)
        kp = self._run(self._solution(static=True, segmentation=mask), image, view, with_mask=mask, work=work)
        if not kp.present[0]:  # the richer graph missed what the detector saw: keep the detector's body
            kp = target.keypoints
        else:
            if mask and kp.mask is not None:
                kp.mask = view.mask_to_frame(kp.mask[0], image.shape[:2])[None]
            if self.flip_average:
                flipped = self._to_keypoints(self._detector().process(np.ascontiguousarray(work[:, ::-1])), view.size, with_mask=False, hands=False)
                if flipped.present[0]:
                    _average_mirrored(kp, _in_frame(_view_to_frame(_unmirror(flipped, view.size[1]), view, image.shape[:2])))
        kp.num_people = len(people)
        kp.notes = tuple(self.notes)
        return kp

    def estimate_video(self, frames: Iterable[np.ndarray], *, fps: float, person: int | None = None) -> Iterator[Keypoints]:
        """Track one person through RGB frames; yields one Keypoints (T=1) per frame, with
        ``present`` False where nobody was found. Raises StudioError for an empty video."""
        self.notes = []
        track = _Track()
        tracker = self._solution(static=False, segmentation=False)
        any_frame = False
        for frame in frames:
            any_frame = True
            size = frame.shape[:2]
            if track.view is None and track.due():
                people = self.find_people(frame, search=self.search and (track.lost == 0 or track.lost % SEARCH_EVERY == 0))
                if people:
                    if not track.chosen:
                        target = self._choose(people, person)
                        track.chosen, track.several = True, len(people) > 1
                    else:
                        target = track.nearest(people)
                        if target.how:
                            self._note(f"the person was found {target.how}")
                    track.start(target, self._view_for(target.box, size, target.turns))
                    tracker.reset()
            if track.view is None:
                track.lost += 1
                kp = Keypoints.empty(1, size, fps=fps)
                kp.num_people = self.num_people
                yield kp
                continue
            view = track.view
            work = view.warp(frame)
            if track.several and track.box is not None:  # follow the chosen one: hide everyone else
                x0, y0, x1, y1 = _expand(track.box, 0.25 + 0.1 * min(track.lost, 10), size)
                corners = view.from_frame(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
                work = _keep_only(work, np.concatenate([corners.min(0), corners.max(0)]))
            kp = self._run(tracker, frame, view, work=work)
            kp.fps = fps
            kp.num_people = self.num_people
            if kp.present[0] and kp.confidence[0].max() > 0:
                track.seen(self._box(kp))
                if view.kind == "crop" and _near_edge(view, track.box):
                    track.view = self._view_for(track.box, size, view.turns)
                    tracker.reset()
            else:
                kp.present[0] = False
                track.lose(whole=view.identity)
            yield kp
        if not any_frame:
            raise StudioError("the video has no frames")

    @staticmethod
    def _view_for(box: np.ndarray, size: tuple[int, int], turns: int, *, margin: float = 0.6) -> View:
        """The whole frame for a person big enough in it (turned if they were found turned; MediaPipe
        crops its region of interest from the frame at full resolution itself), else a full-resolution
        crop around a small person, ``margin`` of their size on each side (room to move in a video)."""
        extent = max(box[2] - box[0], box[3] - box[1])
        if extent >= SMALL_PERSON * min(size):
            return View.turned(size, turns)
        return View.around(box, margin=margin, min_side=256, max_side=720 if margin > 0.5 else 1024, turns=turns)


@dataclasses.dataclass
class _Track:
    """Whom a video's tracker follows, and where."""

    view: View | None = None  # what the tracker is shown; None: search the next frame
    box: np.ndarray | None = None  # the person's last box, frame pixels
    lost: int = 0  # frames since they were last seen
    chosen: bool = False
    several: bool = False  # several people were in view when the person was chosen

    def due(self) -> bool:
        """Whether to search this frame (every frame at first, then every few while nobody is found)."""
        return self.lost <= 2 or self.lost % 3 == 0

    def start(self, target: _Detection, view: View) -> None:
        self.view, self.box = view, target.box

    def seen(self, box: np.ndarray) -> None:
        self.box, self.lost = box, 0

    def lose(self, *, whole: bool) -> None:
        """Nobody found by the tracker: a whole-frame tracker keeps looking on its own for a few
        frames (MediaPipe re-detects), a crop view is dropped at once."""
        self.lost += 1
        if not whole or self.lost >= 2:
            self.view = None

    def nearest(self, people: list[_Detection]) -> _Detection:
        if self.box is None:
            return people[0]
        centre = (self.box[:2] + self.box[2:]) / 2
        return min(people, key=lambda p: float(np.linalg.norm((p.box[:2] + p.box[2:]) / 2 - centre)))


def _near_edge(view: View, box: np.ndarray) -> bool:
    """Whether a person's box (frame pixels) has left the middle of a crop view, or outgrown it."""
    x0, y0, x1, y1 = view.frame_box()
    side = x1 - x0
    inner = np.array([x0 + 0.2 * side, y0 + 0.2 * side, x1 - 0.2 * side, y1 - 0.2 * side])
    centre = (box[:2] + box[2:]) / 2
    outside = (centre < inner[:2]).any() or (centre > inner[2:]).any()
    return bool(outside or max(box[2] - box[0], box[3] - box[1]) > 0.7 * side)


def _view_to_frame(kp: Keypoints, view: View, frame_size: tuple[int, int]) -> Keypoints:
    """Keypoints found on a view, in the frame's pixels and axes (the mask is left in the view's)."""
    if view.identity:
        return kp
    return dataclasses.replace(kp, points=view.to_frame(kp.points), world=view.world_to_frame(kp.world), image_size=tuple(frame_size))


def _in_frame(kp: Keypoints) -> Keypoints:
    """Keypoints outside the frame keep their positions but get confidence 0 (2D and 3D)."""
    h, w = kp.image_size
    p = kp.points
    outside = (p[..., 0] < 0) | (p[..., 0] >= w) | (p[..., 1] < 0) | (p[..., 1] >= h)
    if outside.any():
        kp.confidence = np.where(outside, 0.0, kp.confidence).astype(np.float32)
        kp.world_confidence = np.where(outside, 0.0, kp.world_confidence).astype(np.float32)
    return kp


def _unmirror(kp: Keypoints, width: int) -> Keypoints:
    """Keypoints found on a horizontally mirrored image, back in the unmirrored image: x -> width - x,
    world x -> -x, and left and right joints swapped."""
    points = kp.points[:, _MIRROR].copy()
    points[..., 0] = width - points[..., 0]
    world = kp.world[:, _MIRROR].copy()
    world[..., 0] *= -1.0
    return dataclasses.replace(
        kp, points=points, world=world, confidence=kp.confidence[:, _MIRROR], world_confidence=kp.world_confidence[:, _MIRROR]
    )


def _average_mirrored(kp: Keypoints, other: Keypoints, *, agree: float = 0.08) -> None:
    """Average a second (mirrored) pass into ``kp`` in place, joint by joint where both saw it and
    agree (within ``agree`` of the person's size in the image); where they disagree, the first pass
    stays and its confidence is halved (two guesses apart: neither is sure)."""
    body = np.isin(np.arange(kp.points.shape[1]), _BODY_DST)
    both = (kp.confidence[0] > 0) & (other.confidence[0] > 0) & (kp.world_confidence[0] > 0) & body
    if both.sum() < 4:
        return
    size = float(np.ptp(kp.points[0, both], axis=0).max())
    close = np.linalg.norm(kp.points[0] - other.points[0], axis=-1) < agree * size
    apart = both & ~close
    both &= close
    kp.points[0, both] = 0.5 * (kp.points[0, both] + other.points[0, both])
    kp.world[0, both] = 0.5 * (kp.world[0, both] + other.world[0, both])
    kp.confidence[0, both] = np.minimum(kp.confidence[0, both], other.confidence[0, both])
    kp.world_confidence[0, both] = kp.confidence[0, both]
    kp.confidence[0, apart] *= 0.5
    kp.world_confidence[0, apart] *= 0.5


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
    x0, y0 = max(x0, 0), max(y0, 0)
    out = np.full_like(image, _GREY)
    out[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return out
