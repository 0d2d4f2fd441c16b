"""Guidance maps rendered from a HumanCondition.

Encodings (also in the README):
- ``depth``: [H, W] uint8. Per frame, the body's nearest point is 255 and its farthest 32, linear in
  metric depth between them; background 0. (``depth_metric``: [H, W] float32 metres, background 0.)
- ``normal``: [H, W, 3] uint8. Camera-space unit normals in OpenGL axes (x right, y up, z towards the
  viewer) mapped as ``(n + 1) / 2 * 255``; a surface facing the camera is (128, 128, 255); background 0.
- ``semantic``: [H, W, 3] uint8. A fixed colour per body part (``studio.body.BODY_PART_COLORS``,
  parts ``BODY_PART_NAMES``); background 0.
- ``skeleton``: [H, W, 3] uint8. OpenPose/DWPose style: COCO-18 body limbs in OpenPose colours and
  21-point hands with rainbow edges, on black.
- ``mask``: [H, W] uint8, 255 on the body, 0 elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from studio.body.joints import BODY_PART_COLORS
from studio.errors import StudioError
from studio.render.gl import MeshRasterizer, egl_platform_hint
from studio.render.skeleton import draw_skeleton

MAP_NAMES = ("depth", "normal", "semantic", "skeleton", "mask")
EXTRA_MAP_NAMES = ("depth_metric",)
_MESH_MAPS = {"depth", "normal", "semantic", "mask", "depth_metric"}

__all__ = ["GuidanceRenderer", "MAP_NAMES", "encode_depth", "vertex_normals", "parse_maps"]


def parse_maps(maps: str | Sequence[str]) -> tuple[str, ...]:
    """Validate map names ("depth,normal" or a sequence); one clear error for an unknown name."""
    names = [m.strip() for m in maps.split(",")] if isinstance(maps, str) else list(maps)
    names = [m for m in names if m]
    unknown = [m for m in names if m not in MAP_NAMES + EXTRA_MAP_NAMES]
    if unknown or not names:
        raise StudioError(f"unknown map(s) {unknown or '(none)'}; choose from {', '.join(MAP_NAMES + EXTRA_MAP_NAMES)}")
    return tuple(dict.fromkeys(names))


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals. vertices [T, V, 3], faces [F, 3] -> [T, V, 3]."""
    a, b, c = (vertices[:, faces[:, i]] for i in range(3))
    face_n = torch.linalg.cross(b - a, c - a)  # [T, F, 3], length = 2 * area
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals.index_add_(1, faces[:, i], face_n)
    return torch.nn.functional.normalize(normals, dim=-1)


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """Metric depth [H, W] (0 = background) -> uint8 [H, W], near bright (255), far 32, background 0."""
    valid = depth > 0
    if not valid.any():
        return np.zeros(depth.shape, dtype=np.uint8)
    z = depth[valid]
    near, far = float(z.min()), float(z.max())
    out = np.zeros(depth.shape, dtype=np.uint8)
    scale = 223.0 / max(far - near, 1e-6)
    out[valid] = (255.0 - (z - near) * scale).astype(np.uint8)
    return out


class GuidanceRenderer:
    """Renders guidance maps for one body model at one output size, chunk by chunk."""

    def __init__(self, body_model, *, image_size: tuple[int, int], maps: Sequence[str] = MAP_NAMES) -> None:
        """
        Args:
            body_model: a studio BodyModel (gives faces, part labels, joints).
            image_size: (height, width) of the output maps.
            maps: which maps to produce (see module docstring).
        """
        self.body_model = body_model
        self.maps = parse_maps(maps)
        self.height, self.width = image_size
        self.raster = None
        if _MESH_MAPS & set(self.maps):
            egl_platform_hint()
            colors = np.asarray(BODY_PART_COLORS, dtype=np.uint8)[body_model.part_labels.cpu().numpy() + 1]
            self.raster = MeshRasterizer(
                body_model.faces.cpu().numpy(), colors, width=self.width, height=self.height
            )

    @classmethod
    def for_condition(cls, condition, *, maps: Sequence[str] = MAP_NAMES, size=None, body_model=None):
        from studio.body import load_body_model

        model = body_model if body_model is not None else load_body_model(condition.body_model)
        camera = condition.camera.resized(size)
        return cls(model, image_size=camera.image_size, maps=maps)

    def iter_render(self, condition, *, chunk_size: int = 32) -> Iterator[dict[str, np.ndarray]]:
        """Yield map dicts for consecutive chunks of ``condition``'s frames (see HumanCondition.render)."""
        from studio.condition import project, world_to_camera

        camera = condition.camera.resized((self.height, self.width))
        faces = self.body_model.faces
        valid = self.body_model.joint_valid.cpu().numpy()
        for start in range(0, condition.num_frames, chunk_size):
            frames = slice(start, min(start + chunk_size, condition.num_frames))
            posed = condition.posed(self.body_model, frames=frames)
            E = camera.extrinsics[frames].to(posed.vertices.device)
            K = camera.K[frames].to(posed.vertices.device)
            out: dict[str, list[np.ndarray]] = {m: [] for m in self.maps}
            if self.raster is not None:
                verts = world_to_camera(posed.vertices, E)
                normals = vertex_normals(verts, faces)
                verts_np, normals_np, K_np = verts.cpu().numpy(), normals.cpu().numpy(), K.cpu().numpy()
                for t in range(verts_np.shape[0]):
                    normal, semantic, depth = self.raster.render(verts_np[t], normals_np[t], K_np[t])
                    self._collect(out, normal, semantic, depth)
            if "skeleton" in self.maps:
                joints_cam = world_to_camera(posed.joints, E)
                joints2d = project(joints_cam, K).cpu().numpy()
                in_front = (joints_cam[..., 2] > 1e-3).cpu().numpy()
                for t in range(joints2d.shape[0]):
                    canvas = np.zeros((self.height, self.width, 3), dtype=np.uint8)
                    out["skeleton"].append(draw_skeleton(canvas, joints2d[t], visible=valid & in_front[t]))
            yield {m: np.stack(v) for m, v in out.items()}

    def _collect(self, out, normal, semantic, depth) -> None:
        mask = depth > 0
        if "depth" in out:
            out["depth"].append(encode_depth(depth))
        if "depth_metric" in out:
            out["depth_metric"].append(depth)
        if "normal" in out:
            normal[~mask] = 0
            out["normal"].append(normal)
        if "semantic" in out:
            out["semantic"].append(semantic)
        if "mask" in out:
            out["mask"].append(mask.astype(np.uint8) * 255)

    def release(self) -> None:
        if self.raster is not None:
            self.raster.release()
            self.raster = None
