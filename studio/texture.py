"""A textured body-model avatar cut from a photo: what the ``mesh`` pipeline animates and what the
Gaussian avatar pipeline renders as its embedded multi-view prior (a shared building block, so
pipelines need not import each other).

Texture: every vertex takes its colour from a pixel of the reference image. Vertices the reference
camera sees well (facing it, inside the person mask, and of their body part's colour, so that a
slightly-off fit does not put a forearm on the leggings behind it) take the pixel they project to. The
others take one such vertex's pixel, chosen per body part (``_fill_unseen``): a part seen far less
than its left/right twin takes the twin's texture (the body model's mirror symmetry); otherwise hidden
vertices take the nearest well-seen vertex of the same part in the image plane, so a back mirrors
the front; the back of the head takes the hair. Colours are interpolated across triangles at full
image resolution (a per-pixel lookup into the reference, not per-vertex colours), so the face and
clothes keep their detail.

Background: the person is inpainted out of the reference (OpenCV's shift-map inpainting on the
dilated person mask, tried at three sizes and kept where its texture matches the surroundings', its
colour corrected to meet the hole's rim without a seam). Frames are rendered at ``supersample`` times the output size and reduced, which
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
    held: list = dataclasses.field(default_factory=list)  # studio.animate.held.HeldLayer: objects moved with a hand
    camera_rotation: np.ndarray | None = None  # [3, 3] the photo's world -> camera rotation: when set, the
    # background turns with a frame camera that turns away from it (a far-away backdrop); None keeps it still


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

    parts = body_model.part_labels.cpu().numpy()
    rest = body_model.rest_vertices(reference.body)[0].cpu().numpy()  # [V, 3] T-pose, x across the body
    well_seen = _well_seen(uv, normals, verts_np, visible, mask)
    good = well_seen & _colour_consistent(image, uv, parts, well_seen)
    coords = _fill_unseen(uv, visible, good, parts, rest, verts_np, normals)
    # Keep every lookup on the person: snap coordinates outside the mask to the nearest mask pixel.
    coords = _snap_into_mask(coords, mask)

    if background is None:
        background = inpaint_person(image, mask, output_size)
    return MeshAvatar(image=image, texture_coords=coords, background=background, visible_fraction=float(visible.mean()))


WELL_SEEN_COS = 0.35  # a vertex facing the camera at least this much (cosine) is "well seen" ...
EDGE_MARGIN = 0.012  # ... and lies this far (of the person's height) inside the person mask


def _well_seen(uv: np.ndarray, normals: np.ndarray, verts: np.ndarray, visible: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Visible vertices [V] bool whose pixels are trustworthy: facing the camera, not at a grazing angle
    (where one pixel stretches over much surface: smeared faces when the head turns), and not at the
    silhouette's edge (where the pixel mixes in the background: pale or streaky limbs)."""
    view = -verts / np.linalg.norm(verts, axis=1, keepdims=True)  # towards the camera
    facing = (normals * view).sum(1)
    height = float(np.ptp(uv[visible, 1])) if visible.any() else 1.0
    margin = max(1, round(EDGE_MARGIN * height))
    interior = cv2.erode((mask > 127).astype(np.uint8), np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0
    H, W = mask.shape
    px = np.clip(np.round(uv).astype(int), [0, 0], [W - 1, H - 1])
    return visible & (facing > WELL_SEEN_COS) & interior[px[:, 1], px[:, 0]]


COLOUR_SPREAD = 2.0  # a vertex whose colour is this many median deviations from its part's median ...
COLOUR_FLOOR, COLOUR_CAP = 18.0, 40.0  # ... clamped to this range (CIELAB, 8-bit) is taken for another part's pixel
MULTI_COLOURED = ("head",)  # parts that are rightly of several colours (face and hair)


def _colour_consistent(image: np.ndarray, uv: np.ndarray, parts: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """[V] bool: False for vertices whose pixel's colour is far from the rest of their body part's
    (the median over its ``seen`` [V] bool vertices)
    (a fit a little off puts a forearm's vertices on the leg behind it, or a knee's on the hand resting
    on it: dark streaks on skin, pale patches on trousers)."""
    H, W = image.shape[:2]
    px = np.clip(np.round(uv).astype(int), [0, 0], [W - 1, H - 1])
    lab = cv2.cvtColor(image[px[:, 1], px[:, 0]][None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)  # [V, 3]
    ok = np.ones(len(uv), bool)
    for part in np.unique(parts):
        if BODY_PART_NAMES[int(part)] in MULTI_COLOURED:
            continue
        ids = np.flatnonzero(parts == part)
        ref = lab[ids[seen[ids]]] if seen[ids].sum() >= 8 else lab[ids]
        dist = np.linalg.norm(lab[ids] - np.median(ref, 0), axis=1)
        ok[ids] = dist <= np.clip(COLOUR_SPREAD * float(np.median(dist)), COLOUR_FLOOR, COLOUR_CAP)
    return ok


def mirror_vertices(rest: np.ndarray) -> np.ndarray:
    """Each vertex's left/right counterpart [V] int: the nearest vertex to its mirror image through the
    body's mid-plane (x = the pelvis-centred mean) in the T-pose ``rest`` [V, 3]."""
    from scipy.spatial import cKDTree

    mirrored = rest.copy()
    mirrored[:, 0] = 2 * rest[:, 0].mean() - rest[:, 0]
    return cKDTree(rest).query(mirrored)[1]


MIRROR_SHARE = 0.35  # a part with fewer well-seen vertices than this share of its counterpart's takes the counterpart's texture


def _mirror_part(parts: np.ndarray, mirror: np.ndarray) -> dict[int, int]:
    """Body part -> its left/right counterpart (the part most of its vertices mirror onto)."""
    return {int(p): int(np.bincount(parts[mirror[parts == p]]).argmax()) for p in np.unique(parts)}


def _fill_unseen(
    uv: np.ndarray, visible: np.ndarray, good: np.ndarray, parts: np.ndarray, rest: np.ndarray, verts: np.ndarray, normals: np.ndarray
) -> np.ndarray:
    """Texture coordinates [V, 2] (pixels of the photo) for every vertex.

    Well-seen vertices (``good``) keep their own pixel. The others take one well-seen vertex's pixel
    (never a mean of several pixel positions, which can fall between two parts), decided per body part
    so that neighbouring vertices look up neighbouring pixels (a triangle whose corners look far apart
    in the photo would smear the pixels between them: streaks):
    1. a part seen far less than its left/right counterpart (a knee hidden behind the other) takes the
       counterpart's texture, matched in the T-pose after mirroring;
    2. otherwise its hidden vertices take the nearest well-seen vertex of the same part in the image
       plane, which mirrors the part's front onto its back;
    3. a part seen poorly on both sides keeps what it sees and borrows the nearest well-seen vertex of
       the body in the T-pose elsewhere;
    and the back of the head takes the hair (well-seen head vertices above the eyes), nearest in 3D.

    Args:
        uv: [V, 2] projected vertices; visible/good: [V] bool; parts: [V] part labels; rest: [V, 3]
        T-pose vertices; verts/normals: [V, 3] camera-space vertices and normals.
    """
    from scipy.spatial import cKDTree

    coords = uv.astype(np.float32).copy()
    mirror = mirror_vertices(rest)  # left/right counterparts
    mirrored_rest = rest.copy()
    mirrored_rest[:, 0] = 2 * rest[:, 0].mean() - rest[:, 0]
    counterpart = _mirror_part(parts, mirror)
    for part in np.unique(parts):
        in_part = parts == part
        todo = np.flatnonzero(in_part & ~good)
        seen = np.flatnonzero(in_part & good)
        twin = np.flatnonzero((parts == counterpart[int(part)]) & good)
        if seen.size < MIRROR_SHARE * twin.size and twin.size >= 8:  # 1. mostly hidden: the mirror part's texture
            todo = np.flatnonzero(in_part)
            coords[todo] = uv[twin][cKDTree(mirrored_rest[twin]).query(rest[todo])[1]]
        elif todo.size and seen.size >= 8:  # 2. the part's own front, in the image plane
            coords[todo] = uv[seen][cKDTree(uv[seen]).query(uv[todo])[1]]
        elif todo.size:  # 3. a part only seen poorly: its own pixels where it has them, else the nearest seen body
            own = todo[visible[todo]]
            coords[own] = uv[own]
            hidden = todo[~visible[todo]]
            anywhere = np.flatnonzero(good) if good.sum() >= 3 else np.flatnonzero(visible)
            if hidden.size and anywhere.size:
                coords[hidden] = uv[anywhere][cKDTree(rest[anywhere]).query(rest[hidden])[1]]
    # The back of the head would mirror the face: give it the hair (head vertices the photo shows above
    # the eyes, facing up or sideways), nearest in 3D.
    head = BODY_PART_NAMES.index("head")
    eye_height = -float(verts[parts == head][:, 1].mean())  # camera y points down
    back = np.flatnonzero((parts == head) & ~visible & (normals[:, 2] > 0.0))
    hair = np.flatnonzero((parts == head) & visible & (-verts[:, 1] > eye_height) & (normals[:, 2] > -0.6))
    if back.size and hair.size >= 3:
        dist, idx = cKDTree(verts[hair]).query(verts[back], k=min(4, hair.size))
        weights = 1.0 / (dist + 0.01)
        weights /= weights.sum(1, keepdims=True)
        coords[back] = (uv[hair][idx] * weights[..., None]).sum(1)  # hair pixels are neighbours: a mean stays on the hair
    return coords


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


INPAINT_SIDES = (128, 192, 256)  # longer sides at which the (slow, patch-based) shift-map fill is tried
BAND = 0.04  # of the picture's longer side: the band around the hole whose texture the fill should have


def inpaint_person(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference without the person, at ``size`` (height, width): [h, w, 3] uint8.

    OpenCV's shift-map inpainting (opencv-contrib ``xphoto``) fills the dilated person mask with
    patches of the surrounding scene at a reduced size. Shift-map picks few, large shifts, and at one
    size it may copy a flat wall into the whole hole (a pale, person-shaped patch), so it runs at a few
    sizes and keeps the fill whose texture (Laplacian energy) is closest to the band around the hole.
    The fill is upscaled, corrected by its mismatch along the hole's rim spread smoothly over the hole
    (``membrane``, as in Poisson cloning) so that it meets the surroundings without a seam, and
    feathered into the full-resolution background."""
    h, w = size
    full = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    hole = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR) > 40
    radius = max(3, round(0.025 * max(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    hole = cv2.dilate(hole.astype(np.uint8), kernel)
    rim = (cv2.dilate(hole, np.ones((5, 5), np.uint8)) > 0) & (hole == 0)
    reach = 2 * max(2, round(BAND * max(h, w))) + 1
    around = _texture_energy(full, (cv2.dilate(hole, np.ones((reach, reach), np.uint8)) > 0) & (hole == 0))
    best = None
    for side in INPAINT_SIDES:
        fill = _shift_map(full, hole, side)
        # Shift-map copies whole patches, whose brightness need not match the hole's rim (a seam):
        # correct it by the mismatch along the rim, spread smoothly over the hole, keeping the detail.
        mismatch = np.where(rim[..., None], full.astype(np.float32) - fill, 0.0).astype(np.float32)
        fill = np.clip(fill + membrane(mismatch, rim), 0, 255)
        score = abs(np.log((_texture_energy(fill, hole > 0) + 0.5) / (around + 0.5)))
        if best is None or score < best[0]:
            best = (score, fill)
    fill = best[1]
    alpha = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), radius / 2)[..., None]
    alpha = np.maximum(alpha, hole[..., None].astype(np.float32))
    return (full * (1 - alpha) + fill * alpha).astype(np.uint8)


def _shift_map(full: np.ndarray, hole: np.ndarray, side: int) -> np.ndarray:
    """Shift-map fill of ``hole`` [h, w] uint8 in ``full`` [h, w, 3] uint8, run with the longer side
    ``side`` and upscaled: [h, w, 3] float32."""
    h, w = hole.shape
    s = min(1.0, side / max(h, w))
    sw, sh = max(8, round(w * s)), max(8, round(h * s))
    small = cv2.cvtColor(cv2.resize(full, (sw, sh), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    small_hole = cv2.dilate(cv2.resize(hole, (sw, sh), interpolation=cv2.INTER_NEAREST), np.ones((3, 3), np.uint8))
    filled = np.zeros_like(small)
    cv2.xphoto.inpaint(small, (1 - small_hole).astype(np.uint8), filled, cv2.xphoto.INPAINT_SHIFTMAP)
    return cv2.resize(cv2.cvtColor(filled, cv2.COLOR_BGR2RGB), (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)


def _texture_energy(image: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute Laplacian of the lightly smoothed grey levels of ``image`` inside ``region`` [h, w] bool."""
    if not region.any():
        return 0.0
    grey = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), 1.0), cv2.CV_32F))[region].mean())


def membrane(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """A smooth interpolation [H, W, C] float32 of ``values`` [H, W, C] given where ``known`` [H, W]
    bool, everywhere (push-pull over an image pyramid: where nothing is known, the coarser level's
    estimate shows through)."""
    levels = [(values * known[..., None], known.astype(np.float32))]
    while min(levels[-1][1].shape) > 4:
        v, k = levels[-1]
        levels.append((_down(v), cv2.pyrDown(k)))
    v, k = levels[-1]
    estimate = v / np.maximum(k, 1e-6)[..., None]
    for v, k in reversed(levels[:-1]):
        up = cv2.resize(estimate, (k.shape[1], k.shape[0]), interpolation=cv2.INTER_LINEAR).reshape(v.shape)
        estimate = v + up * (1.0 - np.clip(k, 0.0, 1.0))[..., None]  # premultiplied known values over the coarser estimate
    return estimate.astype(np.float32)


def _down(image: np.ndarray) -> np.ndarray:
    """``cv2.pyrDown`` keeping a channel axis, even a single one."""
    out = cv2.pyrDown(image)
    return out.reshape(*out.shape[:2], image.shape[2])


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
        still = self.avatar.background.astype(np.float32)
        turns = self._background_turns(condition)
        for t in range(condition.num_frames):
            bg = still if turns is None else _turned(still, turns[t])
            self.raster.render_into(verts[t], K[t], out=self._buffer)
            cover = self._buffer[..., 3]
            color = cv2.remap(self.avatar.image, self._buffer[..., 0], self._buffer[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            premult = color.astype(np.float32) * cover[..., None]
            small = cv2.resize(premult, (self.width, self.height), interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(cover, (self.width, self.height), interpolation=cv2.INTER_AREA)[..., None]
            frames[t] = np.clip(small + bg * (1.0 - alpha), 0, 255).astype(np.uint8)
        self._draw_held(frames, condition)
        return frames

    def _draw_held(self, frames: np.ndarray, condition: HumanCondition) -> None:
        """Draw each held object (``avatar.held``) into frames [T, h, w, 3] at its hand, in place."""
        if not self.avatar.held:
            return
        from studio.animate.held import frame_joints

        out = dataclasses.replace(condition, camera=condition.camera.resized((self.height, self.width)))
        focal = out.camera.K[:, 0, 0].numpy()
        for layer in self.avatar.held:
            uv, depth = frame_joints(out, self.body_model, layer.hand)
            for t in range(len(frames)):
                layer.composite(frames[t], layer.place(uv[t], float(depth[t]), float(focal[t])))

    def _background_turns(self, condition: HumanCondition) -> np.ndarray | None:
        """Homographies [T, 3, 3] (output pixels) that turn the background with each frame's camera, or
        None when the background stays still (no reference rotation, or a camera that does not turn)."""
        if self.avatar.camera_rotation is None:
            return None
        camera = condition.camera.resized((self.height, self.width))
        K = camera.K.numpy().astype(np.float64)
        R = camera.extrinsics[:, :3, :3].numpy().astype(np.float64) @ self.avatar.camera_rotation.T  # [T, 3, 3]
        if np.abs(R - np.eye(3)).max() < 1e-4:
            return None
        return K @ R @ np.linalg.inv(K)

    def release(self) -> None:
        self.raster.release()


def _turned(background: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """The background [h, w, 3] as a camera turned by ``homography`` (output pixels) sees it; what
    comes into view past the photo's edges repeats the edge."""
    h, w = background.shape[:2]
    return cv2.warpPerspective(background, homography, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
