"""Views: the part of a frame an estimator is shown, and the way back to the frame's pixels.

A ``View`` is a square (or whole-frame) region of a frame, scaled and turned by quarter turns, padded
with grey where it reaches beyond the frame. The estimator runs on the view's pixels; ``to_frame``
maps its keypoints, metric landmarks and masks back, so a person cut by the frame edge is seen whole
(with grey where the frame ends), a small person is seen at full resolution, and a lying or
upside-down person can be shown upright.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

GREY = 127  # what fills a view beyond the frame and hides other people


@dataclasses.dataclass(frozen=True)
class View:
    """An affine window onto a frame: ``view = scale * R(turns) (frame - centre) + view_centre``."""

    matrix: np.ndarray  # [2, 3] float64: frame pixels -> view pixels
    size: tuple[int, int]  # (height, width) of the view
    turns: int = 0  # quarter turns counter-clockwise of the content (0..3)
    kind: str = "crop"  # "whole" (the frame as it is), "turned" (the whole frame turned) or "crop"

    @property
    def identity(self) -> bool:
        return self.kind == "whole"

    @staticmethod
    def whole(frame_size: tuple[int, int]) -> View:
        """The frame itself."""
        return View(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), tuple(frame_size), 0, "whole")

    @staticmethod
    def turned(frame_size: tuple[int, int], turns: int) -> View:
        """The whole frame turned by ``turns`` quarter turns counter-clockwise (as ``np.rot90``)."""
        h, w = frame_size
        turns %= 4
        if turns == 0:
            return View.whole(frame_size)
        size = (h, w) if turns % 2 == 0 else (w, h)
        return dataclasses.replace(View._make(np.array([w / 2.0, h / 2.0]), 1.0, turns, size), kind="turned")

    @staticmethod
    def around(box: np.ndarray, *, margin: float = 0.25, side: int | None = None, max_side: int = 1280, min_side: int = 0, turns: int = 0) -> View:
        """A square view centred on ``box`` (x0, y0, x1, y1, frame pixels), its side the box's longer
        side grown by ``margin`` on each side; shown at ``side`` pixels (default: its size in the frame,
        kept between ``min_side`` and ``max_side``)."""
        box = np.asarray(box, np.float64)
        centre = (box[:2] + box[2:]) / 2.0
        extent = max(float(box[2] - box[0]), float(box[3] - box[1]), 1.0) * (1.0 + 2.0 * margin)
        out = side or int(np.clip(round(extent), max(min_side, 16), max_side))
        return View._make(centre, out / extent, turns % 4, (out, out))

    @staticmethod
    def _make(centre: np.ndarray, scale: float, turns: int, size: tuple[int, int]) -> View:
        c, s = _quarter(turns)
        R = np.array([[c, s], [-s, c]]) * scale  # counter-clockwise in y-down pixels
        h, w = size
        t = np.array([w / 2.0, h / 2.0]) - R @ centre
        return View(np.concatenate([R, t[:, None]], 1), (int(h), int(w)), turns)

    @property
    def scale(self) -> float:
        """View pixels per frame pixel."""
        return float(np.hypot(self.matrix[0, 0], self.matrix[0, 1]))

    def frame_box(self) -> np.ndarray:
        """The view's extent in frame pixels: x0, y0, x1, y1 [4]."""
        h, w = self.size
        corners = self.to_frame(np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]]))
        return np.concatenate([corners.min(0), corners.max(0)])

    def warp(self, image: np.ndarray) -> np.ndarray:
        """The view's pixels [h, w, C] of a frame (grey beyond it)."""
        if self.identity:
            return image
        if self.kind == "turned":
            return np.ascontiguousarray(np.rot90(image, self.turns))
        h, w = self.size
        flags = cv2.INTER_AREA if self.scale < 1.0 else cv2.INTER_LINEAR
        border = (GREY,) * (image.shape[2] if image.ndim == 3 else 1)
        return cv2.warpAffine(image, self.matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """View pixels [..., 2] -> frame pixels [..., 2]."""
        if self.identity:
            return points
        A, t = self.matrix[:, :2], self.matrix[:, 2]
        return ((points - t) @ np.linalg.inv(A).T).astype(points.dtype)

    def from_frame(self, points: np.ndarray) -> np.ndarray:
        """Frame pixels [..., 2] -> view pixels [..., 2]."""
        if self.identity:
            return points
        return (points @ self.matrix[:, :2].T + self.matrix[:, 2]).astype(points.dtype)

    def world_to_frame(self, world: np.ndarray) -> np.ndarray:
        """Metric landmarks [..., 3] in the view's axes (x right, y down) -> the frame's axes."""
        if self.turns == 0:
            return world
        c, s = _quarter(self.turns)
        out = world.copy()
        out[..., 0] = c * world[..., 0] - s * world[..., 1]
        out[..., 1] = s * world[..., 0] + c * world[..., 1]
        return out

    def mask_to_frame(self, mask: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
        """A view's mask [h, w] uint8 -> the frame's [H, W] (0 outside the view)."""
        if self.identity:
            return mask
        H, W = frame_size
        return cv2.warpAffine(mask, self.matrix, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _quarter(turns: int) -> tuple[float, float]:
    """(cos, sin) of ``turns`` quarter turns, exactly."""
    return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[turns % 4]


def tiles(frame_size: tuple[int, int], *, tile_fraction: float = 0.5, overlap: float = 0.5) -> list[np.ndarray]:
    """Overlapping square tiles covering a frame, each ``tile_fraction`` of its shorter side: boxes
    [4] (x0, y0, x1, y1) in frame pixels, row by row."""
    h, w = frame_size
    side = max(16.0, tile_fraction * min(h, w))
    step = side * (1.0 - overlap)
    xs = np.arange(0.0, max(w - side, 0.0) + step * 0.999, step)
    ys = np.arange(0.0, max(h - side, 0.0) + step * 0.999, step)
    xs = np.minimum(xs, max(w - side, 0.0))
    ys = np.minimum(ys, max(h - side, 0.0))
    return [np.array([x, y, x + side, y + side]) for y in np.unique(ys) for x in np.unique(xs)]


def box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area, 0..1."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(ix * iy / area) if area > 0 else 0.0
