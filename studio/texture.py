"""A textured body-model avatar cut from a photo: what the ``mesh`` pipeline animates and what the
Gaussian avatar pipeline renders as its embedded multi-view prior (a shared building block, so
pipelines need not import each other).

Texture: every vertex takes its colour from a pixel of the reference image. Vertices the reference
camera sees take the pixel they project to. The rest (the back, the sides, parts hidden behind other
parts) take the pixel of the nearest seen vertex of the same body part, nearest in the image plane,
so a back vertex mirrors the front at the same place and seams fall where the part's front texture
ends. Colours are interpolated across triangles at full image resolution (a per-pixel lookup into
the reference, not per-vertex colours), so the face and clothes keep their detail.

Background: the person is inpainted out of the reference (OpenCV's shift-map inpainting on the
dilated person mask). Frames are rendered at ``supersample`` times the output size and reduced, which
anti-aliases the silhouette.
"""

from __future__ import annotations

import dataclasses
import logging

import cv2
import numpy as np
import torch

from studio.body.base import BodyModel
from studio.body.joints import BODY_PART_NAMES
from studio.camera import project, world_to_camera
from studio.condition import HumanCondition
from studio.errors import StudioError
from studio.render.gl import AttributeRasterizer, MeshRasterizer, egl_platform_hint

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class MeshAvatar:
    """What the mesh backend renders from."""

    image: np.ndarray  # [H, W, 3] uint8 reference image
    texture_coords: np.ndarray  # [V, 2] float32 reference-image pixel of each vertex
    background: np.ndarray  # [h, w, 3] uint8 at the output size, the person inpainted out
    visible_fraction: float  # share of vertices the reference camera sees


def build_avatar(
    image: np.ndarray,
    mask: np.ndarray,
    reference: HumanCondition,
    *,
    body_model: BodyModel,
    output_size: tuple[int, int],
    background: np.ndarray | None = None,
) -> MeshAvatar:
    """Texture the fitted reference body from its image and inpaint the background.

    Args:
        image: [H, W, 3] uint8 reference image; mask: [H, W] uint8 person mask (255 = person).
        reference: the fitted one-frame condition (camera of an H x W image).
        output_size: (height, width) of the animation frames.
        background: the inpainted background if already made (``inpaint_person``).
    """
    from scipy.spatial import cKDTree

    H, W = image.shape[:2]
    posed = reference.posed(body_model)
    verts = world_to_camera(posed.vertices, reference.camera.extrinsics)[0]  # [V, 3]
    uv = project(verts[None], reference.camera.K)[0].numpy()
    verts_np = verts.numpy()
    faces = body_model.faces.cpu().numpy()

    # Seen vertices: in front of the depth the reference camera sees there, and inside the person.
    egl_platform_hint()
    raster = MeshRasterizer(faces, np.zeros((len(verts_np), 3), np.uint8), width=W, height=H)
    try:
        from studio.render import vertex_normals

        normals = vertex_normals(verts[None], body_model.faces)[0].numpy()
        depth = np.zeros((H, W), np.float32)
        raster.render_into(
            verts_np, normals, reference.camera.K[0].numpy(),
            normal_out=np.zeros((H, W, 4), np.uint8), color_out=np.zeros((H, W, 4), np.uint8), depth_out=depth,
        )  # fmt: skip
    finally:
        raster.release()
    px = np.clip(np.round(uv).astype(int), [0, 0], [W - 1, H - 1])
    surface = depth[px[:, 1], px[:, 0]]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    person = mask[px[:, 1], px[:, 0]] > 127
    visible = inside & person & (surface > 0) & (verts_np[:, 2] <= surface + 0.02)
    if visible.sum() < 50:
        raise StudioError("the fitted body does not overlap the person in the reference image; cannot texture it")

    # Unseen vertices: the nearest seen vertex of the same part, in the image plane.
    coords = uv.astype(np.float32).copy()
    parts = body_model.part_labels.cpu().numpy()
    everything = cKDTree(uv[visible])
    seen_ids = np.flatnonzero(visible)
    for part in np.unique(parts):
        hidden = np.flatnonzero((parts == part) & ~visible)
        if hidden.size == 0:
            continue
        seen = np.flatnonzero((parts == part) & visible)
        if seen.size >= 3:
            k = min(4, seen.size)
            dist, idx = cKDTree(uv[seen]).query(uv[hidden], k=k)
            source = seen[idx]
        else:  # the whole part is hidden: borrow from whatever is seen nearby
            k = 4
            dist, idx = everything.query(uv[hidden], k=k)
            source = seen_ids[idx]
        weights = 1.0 / (dist + 1.0)
        weights /= weights.sum(1, keepdims=True)
        coords[hidden] = (uv[source] * weights[..., None]).sum(1)
    # The back of the head would mirror the face: give it the hair (seen head vertices above the eyes
    # that face away from the camera at a grazing angle), nearest in 3D.
    head = BODY_PART_NAMES.index("head")
    rest = verts_np
    eye_height = -float(verts_np[parts == head][:, 1].mean())  # camera y points down
    back = np.flatnonzero((parts == head) & ~visible & (normals[:, 2] > 0.0))
    hair = np.flatnonzero((parts == head) & visible & (-rest[:, 1] > eye_height) & (normals[:, 2] > -0.6))
    if back.size and hair.size >= 3:
        dist, idx = cKDTree(rest[hair]).query(rest[back], k=min(4, hair.size))
        weights = 1.0 / (dist + 0.01)
        weights /= weights.sum(1, keepdims=True)
        coords[back] = (uv[hair][idx] * weights[..., None]).sum(1)
    # Keep every lookup on the person: snap coordinates outside the mask to the nearest mask pixel.
    coords = _snap_into_mask(coords, mask)

    if background is None:
        background = inpaint_person(image, mask, output_size)
    return MeshAvatar(image=image, texture_coords=coords, background=background, visible_fraction=float(visible.mean()))


def _snap_into_mask(coords: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Move points [N, 2] that fall outside the mask to the nearest pixel inside it."""
    H, W = mask.shape
    inside = mask > 127
    _, labels = cv2.distanceTransformWithLabels((~inside).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # Label -> pixel position of the zero (inside) pixel it names.
    ys, xs = np.nonzero(inside)
    table = np.zeros((labels.max() + 1, 2), np.float32)
    table[labels[ys, xs]] = np.stack([xs, ys], 1)
    px = np.clip(np.round(coords).astype(int), [0, 0], [W - 1, H - 1])
    outside = ~inside[px[:, 1], px[:, 0]]
    snapped = coords.copy()
    snapped[outside] = table[labels[px[outside, 1], px[outside, 0]]]
    return snapped


INPAINT_SIDE = 192  # longer side at which the (slow, patch-based) inpainting runs (256 costs 2.5x the time)


def inpaint_person(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference without the person, at ``size`` (height, width): [h, w, 3] uint8.

    OpenCV's shift-map inpainting (opencv-contrib ``xphoto``) fills the dilated person mask with
    patches of the surrounding scene at a reduced size; the fill is upscaled and feathered into the
    full-resolution background."""
    h, w = size
    full = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    hole = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR) > 40
    radius = max(3, round(0.025 * max(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    hole = cv2.dilate(hole.astype(np.uint8), kernel)
    s = min(1.0, INPAINT_SIDE / max(h, w))
    sw, sh = max(8, round(w * s)), max(8, round(h * s))
    small = cv2.cvtColor(cv2.resize(full, (sw, sh), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    small_hole = cv2.dilate(cv2.resize(hole, (sw, sh), interpolation=cv2.INTER_NEAREST), np.ones((3, 3), np.uint8))
    filled = np.zeros_like(small)
    cv2.xphoto.inpaint(small, (1 - small_hole).astype(np.uint8), filled, cv2.xphoto.INPAINT_SHIFTMAP)
    fill = cv2.resize(cv2.cvtColor(filled, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_CUBIC)
    alpha = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), radius / 2)[..., None]
    alpha = np.maximum(alpha, hole[..., None].astype(np.float32))
    return (full * (1 - alpha) + fill * alpha).astype(np.uint8)


class AvatarRenderer:
    """Renders the avatar in a sequence of poses over its background."""

    def __init__(self, avatar: MeshAvatar, body_model: BodyModel, *, output_size: tuple[int, int], supersample: int = 2) -> None:
        self.avatar = avatar
        self.body_model = body_model
        self.height, self.width = output_size
        self.supersample = supersample
        egl_platform_hint()
        self.raster = AttributeRasterizer(
            body_model.faces.cpu().numpy(), body_model.num_vertices, width=self.width * supersample, height=self.height * supersample
        )
        self.raster.set_attribute(avatar.texture_coords)
        self._buffer = np.zeros((self.height * supersample, self.width * supersample, 4), np.float32)

    def render(self, condition: HumanCondition) -> np.ndarray:
        """Frames [T, h, w, 3] uint8 of the avatar posed by ``condition`` (output-size camera)."""
        camera = condition.camera.resized((self.height * self.supersample, self.width * self.supersample))
        with torch.no_grad():
            posed = condition.posed(self.body_model)
            verts = world_to_camera(posed.vertices, camera.extrinsics).numpy()
        K = camera.K.numpy()
        frames = np.empty((condition.num_frames, self.height, self.width, 3), np.uint8)
        bg = self.avatar.background.astype(np.float32)
        for t in range(condition.num_frames):
            self.raster.render_into(verts[t], K[t], out=self._buffer)
            cover = self._buffer[..., 3]
            color = cv2.remap(self.avatar.image, self._buffer[..., 0], self._buffer[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            premult = color.astype(np.float32) * cover[..., None]
            small = cv2.resize(premult, (self.width, self.height), interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(cover, (self.width, self.height), interpolation=cv2.INTER_AREA)[..., None]
            frames[t] = np.clip(small + bg * (1.0 - alpha), 0, 255).astype(np.uint8)
        return frames

    def release(self) -> None:
        self.raster.release()
