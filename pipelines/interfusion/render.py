"""A shaded picture of a scene (the human, the object, a checkered floor) and the camera that frames it.

Meshes are rasterised with studio's ``MeshRasterizer`` (moderngl on EGL) into normals and flat
colours, then shaded in numpy: Lambert with one light from the upper left plus ambient light, at
twice the output size and reduced (anti-aliasing).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import trimesh

from studio.camera import Camera, world_to_camera
from studio.render import vertex_normals
from studio.render.gl import MeshRasterizer, egl_platform_hint

HUMAN_COLOR = (222, 196, 170)
BACKGROUND_TOP = np.array([236, 240, 245], np.float32)
BACKGROUND_BOTTOM = np.array([205, 210, 218], np.float32)
LIGHT = np.array([-0.45, 0.65, 0.62], np.float32)  # towards the light, OpenGL camera axes (x right, y up, z to the viewer)


@dataclasses.dataclass
class SceneMesh:
    """One coloured mesh of a picture: vertices [V, 3] world, faces [F, 3], colours [V, 3] uint8 (a
    triangle takes its last vertex's colour) and vertex normals [V, 3] world."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    normals: np.ndarray

    @staticmethod
    def from_trimesh(mesh: trimesh.Trimesh, color: tuple[int, int, int] | None = None, *, smooth_angle: float = 0.6) -> SceneMesh:
        """A trimesh split at edges sharper than ``smooth_angle`` radians (boxes look flat,
        cylinders round), coloured by ``color`` or by its face colours."""
        face_colors = (
            np.asarray(mesh.visual.face_colors)[:, :3]
            if color is None
            else np.tile(np.asarray(color, np.uint8), (len(mesh.faces), 1))
        )
        shaded = mesh.smooth_shaded if smooth_angle > 0 else mesh
        vertices, faces = np.asarray(shaded.vertices, np.float32), np.asarray(shaded.faces, np.int64)
        colors = np.zeros((len(vertices), 3), np.uint8)
        colors[faces[:, 2]] = face_colors[: len(faces)]
        return SceneMesh(vertices, faces, colors, np.asarray(shaded.vertex_normals, np.float32))

    @staticmethod
    def body(vertices: torch.Tensor, faces: torch.Tensor, color: tuple[int, int, int] = HUMAN_COLOR) -> SceneMesh:
        """A body mesh: vertices [V, 3] world, faces [F, 3], one colour, smooth normals."""
        normals = vertex_normals(vertices[None].float(), faces.long())[0]
        colors = np.tile(np.asarray(color, np.uint8), (vertices.shape[0], 1))
        return SceneMesh(
            vertices.detach().cpu().numpy().astype(np.float32),
            faces.cpu().numpy().astype(np.int64),
            colors,
            normals.cpu().numpy(),
        )


def floor_mesh(center: np.ndarray, *, half: float = 2.5, cell: float = 0.5) -> SceneMesh:
    """A checkered floor square at y = 0 around ``center`` (x, z), cells of ``cell`` metres."""
    n = int(round(2 * half / cell))
    x0, z0 = round(center[0] / cell) * cell - half, round(center[2] / cell) * cell - half
    vertices, faces, colors = [], [], []
    for i in range(n):
        for j in range(n):
            x, z = x0 + i * cell, z0 + j * cell
            base = len(vertices)
            vertices += [(x, 0, z), (x + cell, 0, z), (x + cell, 0, z + cell), (x, 0, z + cell)]
            faces += [(base, base + 2, base + 1), (base, base + 3, base + 2)]
            shade = (196, 192, 186) if (i + j) % 2 else (218, 214, 208)
            colors += [shade] * 4
    v = np.asarray(vertices, np.float32)
    return SceneMesh(v, np.asarray(faces, np.int64), np.asarray(colors, np.uint8), np.tile(np.float32([0, 1, 0]), (len(v), 1)))


def framing_camera(
    points: np.ndarray,
    *,
    size: int,
    azimuth: float = 0.6,
    elevation: float = 0.28,
    facing: float = 0.0,
    margin: float = 1.12,
    tighten: bool = True,
) -> Camera:
    """A square camera looking at the points [N, 3] (world) from ``azimuth`` radians about the
    vertical, measured from the direction ``facing`` (the body's front), ``elevation`` radians up,
    at the distance where their bounding sphere fits (``tighten``: then closer, until the points
    themselves fill the frame)."""
    lo, hi = points.min(0), points.max(0)
    center = (lo + hi) / 2
    a = facing + azimuth
    direction = np.array([math.sin(a) * math.cos(elevation), math.sin(elevation), math.cos(a) * math.cos(elevation)])
    focal = float(size)
    half_fov = math.atan(0.5 * size / focal)
    radius = float(np.linalg.norm(points - center, axis=1).max())
    distance = radius * margin / math.sin(half_fov)
    camera = Camera.look_at((center + direction * distance).tolist(), center.tolist(), image_size=(size, size), focal=focal)
    if not tighten:
        return camera
    # tighten: move closer until the projected points fill the frame
    cam = world_to_camera(torch.as_tensor(points[None], dtype=torch.float32), camera.extrinsics)[0].numpy()
    spread = np.abs(cam[:, :2] / cam[:, 2:3]).max() * focal / (0.5 * size)
    distance *= max(0.55, min(1.0, spread * margin))
    return Camera.look_at((center + direction * distance).tolist(), center.tolist(), image_size=(size, size), focal=focal)


def choose_view(human: SceneMesh, objects: list[SceneMesh], *, size: int, facing: float, frame: np.ndarray,
                azimuths: tuple[float, ...] = (0.6, -0.6, 1.2, -1.2, 0.0, 2.0, -2.0)) -> Camera:  # fmt: skip
    """The framing camera (see ``framing_camera``) from the azimuth, among ``azimuths`` (radians from
    the body's front ``facing``), that shows the most of the body, then of the object: each candidate
    is rasterised small with the body and the object in two flat colours and their pixels counted."""
    small = 96
    body = SceneMesh(human.vertices, human.faces, np.tile(np.uint8([255, 0, 0]), (len(human.vertices), 1)), human.normals)
    things = [SceneMesh(o.vertices, o.faces, np.tile(np.uint8([0, 0, 255]), (len(o.vertices), 1)), o.normals) for o in objects]
    cameras = [
        framing_camera(frame, size=small, azimuth=a, facing=facing, tighten=False) for a in azimuths
    ]  # one distance for all
    scores = []
    for color in _rasterise([body, *things], cameras, supersample=1)[1]:
        scores.append(float((color[..., 0] > 128).sum()) + 0.25 * float((color[..., 2] > 128).sum()))
    best = azimuths[int(np.argmax(scores))]
    return framing_camera(frame, size=size, azimuth=best, facing=facing)


def _rasterise(meshes: list[SceneMesh], cameras: list[Camera], *, supersample: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Normal and colour buffers [H', W', 4] uint8 of the meshes for each camera (all of one size),
    at ``supersample`` times the cameras' size, from one GL context."""
    egl_platform_hint()
    h, w = cameras[0].image_size
    H, W = h * supersample, w * supersample
    vertices = np.concatenate([m.vertices for m in meshes]).astype(np.float64)
    normals = np.concatenate([m.normals for m in meshes]).astype(np.float64)
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])[:-1]
    faces = np.concatenate([m.faces + o for m, o in zip(meshes, offsets)])
    colors = np.concatenate([m.colors for m in meshes])
    raster = MeshRasterizer(faces, colors, width=W, height=H)
    normal_bufs, color_bufs = [], []
    try:
        for camera in cameras:
            cam = camera.resized((H, W))
            E = cam.extrinsics[0].numpy().astype(np.float64)
            v_cam = vertices @ E[:3, :3].T + E[:3, 3]
            n_cam = normals @ E[:3, :3].T
            normal_buf = np.zeros((H, W, 4), np.uint8)
            color_buf = np.zeros((H, W, 4), np.uint8)
            raster.render_into(
                v_cam.astype(np.float32), n_cam.astype(np.float32), cam.K[0].numpy(), normal_out=normal_buf, color_out=color_buf
            )
            normal_bufs.append(normal_buf)
            color_bufs.append(color_buf)
    finally:
        raster.release()
    return normal_bufs, color_bufs


def render_scene(meshes: list[SceneMesh], camera: Camera, *, supersample: int = 2) -> np.ndarray:
    """The shaded picture of the meshes seen by the camera's first frame: [H, W, 3] uint8."""
    h, w = camera.image_size
    H = h * supersample
    (normal_buf,), (color_buf,) = _rasterise(meshes, [camera], supersample=supersample)
    n = normal_buf[..., :3].astype(np.float32) / 127.5 - 1.0
    light = LIGHT / np.linalg.norm(LIGHT)
    diffuse = np.clip(n @ light, 0, 1)
    shade = 0.42 + 0.58 * diffuse
    lit = color_buf[..., :3].astype(np.float32) * shade[..., None]
    rows = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    background = BACKGROUND_TOP * (1 - rows) + BACKGROUND_BOTTOM * rows
    covered = normal_buf[..., 3:4] > 0
    image = np.where(covered, lit, background)
    image = image.reshape(h, supersample, w, supersample, 3).mean(axis=(1, 3))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


__all__ = ["HUMAN_COLOR", "SceneMesh", "choose_view", "floor_mesh", "framing_camera", "render_scene"]
