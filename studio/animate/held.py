"""What the person holds (a ball, a bag, a barbell, a phone): found in the reference photo next to the
hands, so that it is removed from the background with the person and moves with the hand.

Finding it: around each hand of the fitted body, a graph cut (OpenCV's GrabCut) separates what is
neither the fitted body's silhouette nor the surrounding scene. The body (eroded) and the border of a
box about the hand are fixed as "not the object"; the rest of a disc about the palm that the body
does not cover (1.6 hand lengths) is "probably the object". The object is the part of the cut's foreground that touches
the hand, kept only when it is large enough (a fifteenth of the disc or more).

Moving it: ``HeldLayer`` is the object's pixels (an RGBA sprite) pinned to the hand's elbow -> palm
segment; each frame places it with the similarity that carries the reference's segment onto the
frame's (rotation and position from the segment, size from the palm's depth).
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np
import torch

from studio.body.joints import JOINT_INDEX

logger = logging.getLogger(__name__)

WORK_SIDE = 640  # longer side at which the cut runs
HANDS = {side: tuple(JOINT_INDEX[f"{side}_{n}"] for n in ("elbow", "wrist", "middle1")) for side in ("left", "right")}
MIN_SHARE = 1 / 15  # smallest object, as a share of the disc about the palm
MAX_SHARE = 3.0  # largest (a barbell spans several discs)
MIN_CONTRAST = 12.0  # chroma distance from the surroundings (CIELAB a, b) that makes a region an object ...
MIN_INSIDE = 0.5  # ... unless this share of it is in the person mask (the segmenter took it for the person's)


@dataclasses.dataclass
class HeldLayer:
    """A held object as a sprite pinned to one hand."""

    sprite: np.ndarray  # [h, w, 4] uint8 RGBA crop of the photo (alpha: the object)
    origin: np.ndarray  # [2] float, the crop's top-left pixel in the photo
    hand: str  # "left" or "right"
    joints: np.ndarray  # [3, 2] elbow, wrist, palm pixels in the photo
    palm_depth: float  # the palm's depth in the photo's camera (metres)
    focal: float  # the photo camera's focal length (pixels)

    def place(self, joints_uv: np.ndarray, palm_depth: float, focal: float) -> np.ndarray:
        """The [2, 3] affine map from photo pixels to a frame's pixels, given the frame's elbow, wrist
        and palm pixels [3, 2], the palm's depth and the frame camera's focal length (pixels)."""
        ref = self.joints[2] - self.joints[0]
        new = joints_uv[2] - joints_uv[0]
        angle = np.arctan2(new[1], new[0]) - np.arctan2(ref[1], ref[0])
        scale = (focal / max(palm_depth, 1e-3)) / (self.focal / max(self.palm_depth, 1e-3))
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        A = np.array([[c, -s], [s, c]])
        return np.concatenate([A, (joints_uv[2] - A @ self.joints[2])[:, None]], 1)

    def composite(self, frame: np.ndarray, affine: np.ndarray) -> None:
        """Draw the object into ``frame`` [h, w, 3] uint8 (in place) with ``affine`` (photo -> frame pixels)."""
        h, w = frame.shape[:2]
        shift = np.array([[1.0, 0.0, self.origin[0]], [0.0, 1.0, self.origin[1]], [0.0, 0.0, 1.0]])
        M = (np.vstack([affine, [0, 0, 1]]) @ shift)[:2]
        warped = cv2.warpAffine(self.sprite, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = warped[..., 3:].astype(np.float32) / 255.0
        frame[:] = (frame * (1 - alpha) + warped[..., :3] * alpha).astype(np.uint8)


def body_silhouette(vertices_uv: np.ndarray, faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W] bool: pixels the body's triangles (projected vertices [V, 2], faces [F, 3]) cover."""
    out = np.zeros(size, np.uint8)
    tris = np.round(vertices_uv[faces] * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    cv2.fillPoly(out, list(tris), 1, lineType=cv2.LINE_8, shift=2)
    return out.astype(bool)


def find_held_objects(
    image: np.ndarray, mask: np.ndarray, reference, *, body_model
) -> tuple[np.ndarray, list[HeldLayer]]:
    """Objects the fitted person holds: their mask, and a layer per hand that holds something.

    Args:
        image: [H, W, 3] uint8 photo; mask: [H, W] uint8 person mask (255 = person).
        reference: its one-frame fitted HumanCondition (camera of an H x W image).
    Returns:
        ([H, W] uint8 mask of what is held (255), the HeldLayers).
    """
    from studio.camera import project, world_to_camera

    H, W = image.shape[:2]
    with torch.no_grad():
        posed = reference.posed(body_model)
        cam_verts = world_to_camera(posed.vertices, reference.camera.extrinsics)[0]
        cam_joints = world_to_camera(posed.joints, reference.camera.extrinsics)[0]
        uv = project(cam_verts[None], reference.camera.K)[0].numpy()
        juv = project(cam_joints[None], reference.camera.K)[0].numpy()
    s = min(1.0, WORK_SIDE / max(H, W))
    size = (max(8, round(H * s)), max(8, round(W * s)))
    small = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
    person = cv2.resize(mask, size[::-1], interpolation=cv2.INTER_LINEAR) > 127
    body = body_silhouette(uv * s, body_model.faces.cpu().numpy(), size)
    height = float(np.ptp(uv[:, 1]) * s)
    grow = max(2, round(0.01 * height))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    body_near = cv2.dilate(body.astype(np.uint8), kernel).astype(bool)
    body_core = cv2.erode(body.astype(np.uint8), kernel).astype(bool)
    layers, held = [], np.zeros_like(mask)
    yy, xx = np.mgrid[: size[0], : size[1]]
    for side, ids in HANDS.items():
        elbow, wrist, palm = juv[list(ids)] * s
        radius = max(0.9 * float(np.linalg.norm(wrist - elbow)), 0.1 * height)  # a foreshortened forearm is short
        if radius < 4 or not (0 <= palm[0] < size[1] and 0 <= palm[1] < size[0]):
            continue
        x0, y0 = (np.maximum(0, palm - 2.8 * radius)).astype(int)
        x1, y1 = (np.minimum([size[1], size[0]], palm + 2.8 * radius)).astype(int)
        disc = (xx - palm[0]) ** 2 + (yy - palm[1]) ** 2 <= (1.6 * radius) ** 2
        gc = np.full(size, cv2.GC_PR_BGD, np.uint8)
        gc[disc & ~body_near] = cv2.GC_PR_FGD
        gc[body_core] = cv2.GC_BGD
        roi = gc[y0:y1, x0:x1].copy()
        if roi.shape[0] < 8 or roi.shape[1] < 8 or not (roi == cv2.GC_PR_FGD).any():
            continue
        border = max(2, round(0.08 * radius))
        roi[:border], roi[-border:], roi[:, :border], roi[:, -border:] = (cv2.GC_BGD,) * 4
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's global generator: the same photo, the same cut
        try:
            cv2.grabCut(cv2.cvtColor(small[y0:y1, x0:x1], cv2.COLOR_RGB2BGR), roi, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # a ROI whose seeds leave one model empty
            continue
        found = np.zeros(size, bool)
        found[y0:y1, x0:x1] = (roi == cv2.GC_FGD) | (roi == cv2.GC_PR_FGD)
        found &= ~body_near
        found = _touching(found, palm, 0.8 * radius)
        area = float(found.sum())
        logger.debug("%s hand: radius %.0f, %.0f px touch the hand", side, radius, area)
        disc_area = np.pi * radius**2
        if not MIN_SHARE * disc_area <= area <= MAX_SHARE * disc_area:
            continue
        ring = np.zeros(size, bool)
        ring[y0:y1, x0:x1] = True
        ring &= ~found & ~body_near & ~disc
        contrast, inside = _contrast(small, found, ring), float((found & person).sum()) / area
        logger.debug("%s hand: candidate %.0f px, colour contrast %.1f, %.0f%% in the person mask", side, area, contrast, 100 * inside)
        if contrast < MIN_CONTRAST and inside < MIN_INSIDE:
            continue
        full = cv2.resize(found.astype(np.uint8) * 255, (W, H), interpolation=cv2.INTER_LINEAR)
        full = cv2.dilate(full, np.ones((3, 3), np.uint8))
        layers.append(_layer(image, full, side, juv[list(ids)], float(cam_joints[ids[2], 2]), float(reference.camera.K[0, 0, 0])))
        held = np.maximum(held, full)
        logger.info("the %s hand holds something (%.0f%% of the hand's disc, %s person mask)", side, 100 * area / disc_area,
                    "partly in the" if (found & person).any() else "outside the")  # fmt: skip
    return held, layers


def _contrast(image: np.ndarray, region: np.ndarray, around: np.ndarray) -> float:
    """How far the region's mean colour is from its surroundings' in chroma (CIELAB a, b), a shadow
    or a darker patch of the same ground scoring low."""
    if not around.any():
        return 0.0
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)[..., 1:]
    return float(np.linalg.norm(lab[region].mean(0) - lab[around].mean(0)))


def _touching(region: np.ndarray, point: np.ndarray, reach: float) -> np.ndarray:
    """The connected parts of ``region`` [H, W] bool that come within ``reach`` pixels of ``point``."""
    count, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(region)
    near = np.zeros(region.shape, np.uint8)
    cv2.circle(near, (int(round(point[0])), int(round(point[1]))), max(1, int(round(reach))), 1, -1)
    keep = np.unique(labels[(near > 0) & region])
    return np.isin(labels, keep[keep > 0])


def _layer(image: np.ndarray, alpha: np.ndarray, side: str, joints: np.ndarray, depth: float, focal: float) -> HeldLayer:
    """The sprite of ``image`` where ``alpha`` [H, W] uint8 is set, cropped to it."""
    ys, xs = np.nonzero(alpha)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sprite = np.concatenate([image[y0:y1, x0:x1], alpha[y0:y1, x0:x1, None]], -1)
    return HeldLayer(sprite=sprite, origin=np.array([x0, y0], np.float64), hand=side, joints=joints.astype(np.float64), palm_depth=depth, focal=focal)


def frame_joints(condition, body_model, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's elbow, wrist and palm pixels [T, 3, 2] and the palm's depth [T] for ``side``'s hand."""
    from studio.camera import project, world_to_camera

    ids = list(HANDS[side])
    with torch.no_grad():
        joints = condition.posed(body_model).joints[:, ids]
        cam = world_to_camera(joints, condition.camera.extrinsics)
        return project(cam, condition.camera.K).numpy(), cam[:, 2, 2].numpy()
