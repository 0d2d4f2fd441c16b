"""Multi-view priors: what the avatar is fitted to. One interface, two implementations:

- ``MeshOrbitPrior`` (embedded): the photo-textured body avatar (``studio.texture``) rendered on an
  orbit around the fitted body. Exactly consistent across views and with the body, so the fit
  converges fast; it shows what the texture shows (the back mirrors the front, hair and loose
  clothes beyond the body are missing from the side views);
- ``pipelines.gaussians.sv3d.SV3DPrior`` (with weights): an SV3D-style video diffusion model
  generating the orbit from the photo, as MVD-HuGaS does with its human fine-tune.

Either way the photo itself is added as the front view (``photo_view``), and the faces of the
generated views are repaired from the photo (``fix_faces``: MVD-HuGaS's face-distortion fix, with
the fitted body's face where the paper fits a face model).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import cv2
import numpy as np
import torch

from studio.body.base import BodyModel
from studio.body.joints import BODY_PART_COLORS, BODY_PART_NAMES
from studio.camera import Camera, camera_to_world, project, unproject, world_to_camera
from studio.condition import HumanCondition

PHOTO_MARGIN = 1.12  # the photo view's crop around the person, as a factor of its box


@dataclasses.dataclass
class PriorContext:
    """What a prior sees: the photo, its person mask, the fitted body and its texture."""

    image: np.ndarray  # [H, W, 3] uint8
    mask: np.ndarray  # [H, W] uint8 (255 = person)
    condition: HumanCondition  # T=1, the fitted photo
    body_model: BodyModel
    texture: object  # studio.texture.MeshAvatar of the photo (background unused)
    seed: int = 0


@dataclasses.dataclass
class Views:
    """Images the avatar is fitted to, with their cameras."""

    images: torch.Tensor  # [V, H, W, 3] float 0..1
    masks: torch.Tensor  # [V, H, W] float 0..1 (person coverage)
    camera: Camera  # V frames, image size (H, W)

    def __len__(self) -> int:
        return int(self.images.shape[0])


class MultiViewPrior(Protocol):
    """Generates views of the person around the fitted body."""

    name: str
    exact_cameras: bool  # True: the views match their cameras exactly; False: nominal poses (the fit corrects them)

    def cameras(self, context: PriorContext, *, num_views: int, size: int) -> Camera:
        """The nominal cameras of the views ``generate`` makes."""

    def generate(self, context: PriorContext, cameras: Camera, *, on_progress=None) -> Views:
        """The views for ``cameras``."""


def sample_image(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear samples [N, C] float32 of an image [H, W, C] at pixels [N, 2] (x, y; studio's pixel
    convention, centres at +0.5), edges replicated."""
    n = pixels.shape[0]
    cols = 1024
    rows = max(1, -(-n // cols))
    grid = np.zeros((rows * cols, 2), np.float32)
    grid[:n] = pixels - 0.5
    grid = grid.reshape(rows, cols, 2)
    out = cv2.remap(np.asarray(image, np.float32), grid[..., 0], grid[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:n]


def body_sphere(condition: HumanCondition, body_model: BodyModel) -> tuple[torch.Tensor, float]:
    """Centre [3] (of the posed body's bounding box) and radius (metres) of a sphere around it."""
    verts = condition.posed(body_model).vertices[0]
    centre = 0.5 * (verts.amin(0) + verts.amax(0))
    return centre, float((verts - centre).norm(dim=-1).max())


@dataclasses.dataclass(frozen=True)
class PhotoViewpoint:
    """Where the photo was taken from, relative to the posed body."""

    centre: torch.Tensor  # [3] the body's centre (world)
    radius: float  # of a sphere around the body, metres
    distance: float  # from the photo's camera to the centre, metres
    elevation: float  # radians above the horizontal
    azimuth: float  # radians about Y (0: on the +Z side)


def photo_viewpoint(condition: HumanCondition, body_model: BodyModel) -> PhotoViewpoint:
    centre, radius = body_sphere(condition, body_model)
    offset = camera_to_world(torch.zeros(1, 1, 3), condition.camera.extrinsics)[0, 0] - centre
    dist = float(offset.norm())
    elevation = math.asin(max(-1.0, min(1.0, float(offset[1]) / max(dist, 1e-6))))
    return PhotoViewpoint(centre, radius, dist, elevation, math.atan2(float(offset[0]), float(offset[2])))


def ring_cameras(centre: torch.Tensor, *, distance: float, angles: list[tuple[float, float]], size: int, focal: float) -> Camera:
    """Square cameras looking at ``centre`` [3] from ``distance`` metres, one per (azimuth, elevation)
    in radians (azimuth about Y, 0 on the +Z side)."""
    cams = []
    for a, e in angles:
        pos = centre + distance * torch.tensor([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)])
        cams.append(Camera.look_at(pos.tolist(), centre.tolist(), image_size=(size, size), focal=focal))
    return Camera(K=torch.cat([c.K for c in cams]), extrinsics=torch.cat([c.extrinsics for c in cams]), image_size=(size, size))


def orbit(context: PriorContext, *, num_views: int, size: int, azimuth_offset: float = 0.0, elevations: tuple[float, ...] = (0.0,), fill: float = 0.86) -> Camera:
    """Square cameras on a circle around the posed body at the photo camera's distance, starting at
    its azimuth (+ ``azimuth_offset`` of a step), looking at the body's centre, zoomed so that the
    body's bounding sphere spans ``fill`` of the frame; views alternate between ``elevations``
    (radians, added to the photo's)."""
    vp = photo_viewpoint(context.condition, context.body_model)
    dist = max(vp.distance, 1.5 * vp.radius)
    focal = 0.5 * fill * size / math.tan(math.asin(min(vp.radius / dist, 0.99)))
    angles = [(vp.azimuth + 2 * math.pi * (k + azimuth_offset) / num_views, vp.elevation + elevations[k % len(elevations)]) for k in range(num_views)]
    return ring_cameras(vp.centre, distance=dist, angles=angles, size=size, focal=focal)


def still(condition: HumanCondition, camera: Camera) -> HumanCondition:
    """The one-frame ``condition``'s body held still for every frame of ``camera``."""
    n = len(camera)
    return HumanCondition(body_model=condition.body_model, body={k: v.expand(n, -1).clone() for k, v in condition.body.items()}, camera=camera, fps=30.0)


class MeshOrbitPrior:
    """The photo-textured body rendered for any cameras (embedded; needs no weights)."""

    name = "mesh"
    exact_cameras = True  # its views are rendered with the cameras they are fitted with

    def __init__(self, *, supersample: int = 2, elevations: tuple[float, ...] = (0.0, math.radians(20.0))) -> None:
        self.supersample = supersample
        self.elevations = elevations

    def cameras(self, context: PriorContext, *, num_views: int, size: int) -> Camera:
        return orbit(context, num_views=num_views, size=size, elevations=self.elevations)

    def generate(self, context: PriorContext, cameras: Camera, *, on_progress=None) -> Views:
        from studio.texture import AvatarRenderer

        size = cameras.image_size
        cond = still(context.condition, cameras)
        layers = []
        for value in (0, 255):  # over black and over white: the difference is the coverage
            avatar = dataclasses.replace(context.texture, background=np.full((*size, 3), value, np.uint8))
            renderer = AvatarRenderer(avatar, context.body_model, output_size=size, supersample=self.supersample)
            try:
                layers.append(renderer.render(cond).astype(np.float32) / 255.0)
            finally:
                renderer.release()
        black, white = layers
        alpha = np.clip(1.0 - (white - black).mean(-1), 0.0, 1.0)
        color = np.where(alpha[..., None] > 1e-3, black / np.maximum(alpha[..., None], 1e-3), 0.0)
        if on_progress is not None:
            on_progress(len(cameras), len(cameras))
        return Views(images=torch.from_numpy(np.clip(color, 0, 1)).float(), masks=torch.from_numpy(alpha).float(), camera=cameras)


def photo_view(context: PriorContext, *, size: int) -> Views:
    """The photo itself as a view: cropped around the person (mask and fitted body) and scaled so its
    longer side is ``size``, with the photo's camera adjusted to the crop."""
    H, W = context.mask.shape
    ys, xs = np.nonzero(context.mask > 127)
    cond = context.condition
    verts = world_to_camera(cond.posed(context.body_model).vertices, cond.camera.extrinsics)
    uv = project(verts, cond.camera.K)[0].numpy()
    x0, x1 = min(xs.min(initial=W), uv[:, 0].min()), max(xs.max(initial=0), uv[:, 0].max())
    y0, y1 = min(ys.min(initial=H), uv[:, 1].min()), max(ys.max(initial=0), uv[:, 1].max())
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    half = 0.5 * PHOTO_MARGIN * max(x1 - x0, y1 - y0)
    x0, y0 = int(math.floor(max(0.0, cx - half))), int(math.floor(max(0.0, cy - half)))
    x1, y1 = int(math.ceil(min(float(W), cx + half))), int(math.ceil(min(float(H), cy + half)))
    scale = size / max(x1 - x0, y1 - y0)
    w, h = max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale))
    image = cv2.resize(context.image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(context.mask[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
    K = cond.camera.K.clone()
    sx, sy = w / (x1 - x0), h / (y1 - y0)
    K[:, 0, 0] *= sx
    K[:, 1, 1] *= sy
    K[:, 0, 2] = (K[:, 0, 2] - x0) * sx
    K[:, 1, 2] = (K[:, 1, 2] - y0) * sy
    camera = Camera(K=K, extrinsics=cond.camera.extrinsics.clone(), image_size=(h, w))
    return Views(images=torch.from_numpy(image).float()[None] / 255.0, masks=torch.from_numpy(mask).float()[None] / 255.0, camera=camera)


# --- the face fix ----------------------------------------------------------------------------------


def fix_faces(views: Views, context: PriorContext, *, facing: float = 0.35, feather: float = 0.03) -> tuple[Views, int]:
    """Repair the face in generated views from the photo, by a warp guided by the fitted body's depth.

    Each pixel of a view on the body's head is lifted to 3D with the body's depth there, projected
    into the photo, and takes the photo's colour where the photo sees that point of the head
    squarely (its surface within 2 cm of the photo's depth, facing the photo's camera by more than
    ``facing``). The repaired region is feathered into the view.

    Returns:
        the repaired views and how many views were changed.
    """
    cond, model = context.condition, context.body_model
    H, W = context.mask.shape
    ref = cond.render(("depth_metric", "semantic", "normal"), body_model=model)
    ref_depth, ref_sem, ref_normal = ref["depth_metric"][0], ref["semantic"][0], ref["normal"][0]
    head = np.array(BODY_PART_COLORS[BODY_PART_NAMES.index("head") + 1], np.uint8)
    ref_head = (ref_sem == head).all(-1)
    ref_facing = ref_normal[..., 2].astype(np.float32) / 255.0 * 2.0 - 1.0
    target = still(cond, views.camera).render(("depth_metric", "semantic"), body_model=model)
    images = views.images.clone()
    photo = context.image.astype(np.float32) / 255.0
    changed = 0
    for v in range(len(views)):
        depth = target["depth_metric"][v]
        ys, xs = np.nonzero((depth > 0) & (target["semantic"][v] == head).all(-1))
        if len(xs) == 0:
            continue
        pix = torch.from_numpy(np.stack([xs + 0.5, ys + 0.5], -1)).float()[None]
        cam_pts = unproject(pix, torch.from_numpy(depth[ys, xs])[None], views.camera.K[v : v + 1])
        world = camera_to_world(cam_pts, views.camera.extrinsics[v : v + 1])
        in_ref = world_to_camera(world, cond.camera.extrinsics)[0]
        uv = project(in_ref[None], cond.camera.K)[0].numpy()
        u = np.clip(np.floor(uv[:, 0]).astype(int), 0, W - 1)
        r = np.clip(np.floor(uv[:, 1]).astype(int), 0, H - 1)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        seen = inside & ref_head[r, u] & (np.abs(ref_depth[r, u] - in_ref[:, 2].numpy()) < 0.02) & (ref_facing[r, u] > facing)
        if seen.sum() < 16:
            continue
        weight = np.zeros(depth.shape, np.float32)
        weight[ys[seen], xs[seen]] = np.clip((ref_facing[r[seen], u[seen]] - facing) / 0.3, 0.0, 1.0)
        inside_px = cv2.distanceTransform((weight > 0).astype(np.uint8), cv2.DIST_L2, 3)  # to the region's edge
        weight *= np.clip(inside_px / max(1.0, feather * depth.shape[0]), 0.0, 1.0)
        warped = np.zeros((*depth.shape, 3), np.float32)
        warped[ys[seen], xs[seen]] = sample_image(photo, uv[seen])
        w = torch.from_numpy(weight)[..., None]
        images[v] = images[v] * (1 - w) + torch.from_numpy(warped) * w
        changed += 1
    return dataclasses.replace(views, images=images), changed


__all__ = [
    "MeshOrbitPrior", "MultiViewPrior", "PhotoViewpoint", "PriorContext", "Views", "body_sphere", "fix_faces", "orbit", "photo_view",
    "photo_viewpoint", "ring_cameras", "sample_image", "still",
]  # fmt: skip
