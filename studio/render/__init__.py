"""Guidance maps rendered from a HumanCondition.

Encodings (also in the README):
- ``depth``: [H, W] uint8. Per frame, the body's nearest vertex is 255 and its farthest vertex 32,
  linear in metric depth between them; background 0. (``depth_metric``: [H, W] float32 metres,
  background 0.)
- ``normal``: [H, W, 3] uint8. Camera-space unit normals in OpenGL axes (x right, y up, z towards the
  viewer) mapped as ``(n + 1) / 2 * 255``; a surface facing the camera is (128, 128, 255); background 0.
- ``semantic``: [H, W, 3] uint8. A fixed colour per body part (``studio.body.BODY_PART_COLORS``,
  parts ``BODY_PART_NAMES``); background 0.
- ``skeleton``: [H, W, 3] uint8. OpenPose/DWPose style: COCO-18 body limbs in OpenPose colours and
  21-point hands with rainbow edges, on black.
- ``mask``: [H, W] uint8, 255 on the body, 0 elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from studio.body.joints import BODY_PART_COLORS
from studio.camera import Camera, project, world_to_camera
from studio.errors import StudioError
from studio.render.gl import MeshRasterizer, egl_platform_hint
from studio.render.skeleton import draw_skeleton

MAP_NAMES = ("depth", "normal", "semantic", "skeleton", "mask")
EXTRA_MAP_NAMES = ("depth_metric",)
_MESH_MAPS = {"depth", "normal", "semantic", "mask", "depth_metric"}

__all__ = ["GuidanceRenderer", "MAP_NAMES", "vertex_normals", "parse_maps"]


def parse_maps(maps: str | Sequence[str]) -> tuple[str, ...]:
    """Validate map names ("depth,normal" or a sequence); one clear error for an unknown name."""
    names = [m.strip() for m in maps.split(",")] if isinstance(maps, str) else list(maps)
    names = [m for m in names if m]
    unknown = [m for m in names if m not in MAP_NAMES + EXTRA_MAP_NAMES]
    if unknown or not names:
        raise StudioError(f"unknown map(s) {unknown or '(none)'}; choose from {', '.join(MAP_NAMES + EXTRA_MAP_NAMES)}")
    return tuple(dict.fromkeys(names))


def vertex_face_matrix(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Sparse CSR [V, F] incidence matrix (1 where a face uses a vertex), for ``vertex_normals``."""
    import warnings

    F = faces.shape[0]
    order = torch.argsort(faces.reshape(-1), stable=True)
    rows = faces.reshape(-1)[order]
    cols = torch.arange(F, device=faces.device).repeat_interleave(3)[order]
    crow = torch.zeros(num_vertices + 1, dtype=torch.long, device=faces.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=num_vertices), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, cols, torch.ones(3 * F, device=faces.device), (num_vertices, F))


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor, incidence: torch.Tensor | None = None) -> torch.Tensor:
    """Area-weighted unit vertex normals.

    Args:
        vertices: [T, V, 3]; faces: [F, 3]; incidence: optional cached ``vertex_face_matrix``.
    Returns:
        [T, V, 3] unit normals.
    """
    T, V, _ = vertices.shape
    if incidence is None:
        incidence = vertex_face_matrix(faces, V)
    tri = vertices[:, faces.reshape(-1)].reshape(T, -1, 3, 3)
    face_n = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])  # |n| = 2 area
    summed = incidence @ face_n.permute(1, 0, 2).reshape(faces.shape[0], T * 3)
    return torch.nn.functional.normalize(summed.reshape(V, T, 3).permute(1, 0, 2), dim=-1)


def iter_map_video_frames(
    condition, maps: Sequence[str], *, size=None, body_model=None, labels: bool = True, chunk_size: int = 16
) -> Iterator[np.ndarray]:
    """One RGB frame per condition frame with the maps side by side (each labelled on request)."""
    from studio.media import hstack_frames, to_rgb

    names = [m for m in parse_maps(maps) if m != "depth_metric"]
    for chunk in condition.iter_render(names, size=size, body_model=body_model, chunk_size=chunk_size):
        for t in range(len(chunk[names[0]])):
            yield hstack_frames([to_rgb(chunk[name][t]) for name in names], labels=names if labels else None)


class GuidanceRenderer:
    """Renders guidance maps of one mesh topology at one output size, chunk by chunk.

    It knows meshes and cameras only: the vertices and joints of each chunk come from a callable
    (``HumanCondition.iter_render`` passes its body model's forward pass), so rendering imports no
    body model and no condition.
    """

    def __init__(
        self,
        faces: torch.Tensor,
        part_labels: torch.Tensor,
        *,
        image_size: tuple[int, int],
        maps: Sequence[str] = MAP_NAMES,
        joint_valid: torch.Tensor | None = None,
    ) -> None:
        """
        Args:
            faces: [F, 3] vertex indices of the mesh.
            part_labels: [V] body-part index of each vertex (``BODY_PART_NAMES``), for the semantic map.
            image_size: (height, width) of the output maps.
            maps: which maps to produce (see module docstring).
            joint_valid: [NUM_JOINTS] bool, the joints the skeleton map may draw (default: all).
        """
        self.faces = torch.as_tensor(faces).long()
        self.num_vertices = int(part_labels.shape[0])
        self.joint_valid = None if joint_valid is None else torch.as_tensor(joint_valid).cpu().numpy()
        self.maps = parse_maps(maps)
        self.height, self.width = image_size
        self.raster = None
        if _MESH_MAPS & set(self.maps):
            egl_platform_hint()
            colors = np.asarray(BODY_PART_COLORS, dtype=np.uint8)[torch.as_tensor(part_labels).cpu().numpy() + 1]
            self.raster = MeshRasterizer(self.faces.cpu().numpy(), colors, width=self.width, height=self.height)

    def iter_render(
        self, posed: Callable[[slice], tuple[torch.Tensor, torch.Tensor]], camera: Camera, *, chunk_size: int = 32
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield map dicts for consecutive chunks of the camera's frames (see HumanCondition.render).

        Args:
            posed: frames (a slice) -> (vertices [n, V, 3], joints [n, NUM_JOINTS, 3]), world space.
            camera: the T frames' camera (any image size: it is scaled to this renderer's).
        The arrays of one chunk are views into buffers reused for the next chunk: copy what you keep.
        """
        camera = camera.resized((self.height, self.width))
        num_frames = len(camera)
        faces = self.faces
        incidence = vertex_face_matrix(faces, self.num_vertices) if self.raster else None
        H, W = self.height, self.width
        n_max = min(chunk_size, num_frames)
        normal_buf = np.zeros((n_max, H, W, 4), dtype=np.uint8)
        color_buf = np.zeros((n_max, H, W, 4), dtype=np.uint8)
        depth_buf = np.zeros((n_max, H, W), dtype=np.float32) if "depth_metric" in self.maps else None
        skeleton_buf = np.zeros((n_max, H, W, 3), dtype=np.uint8) if "skeleton" in self.maps else None

        def prepare(frames: slice) -> dict[str, np.ndarray]:
            """Body forward, camera transform, normals and projection of one chunk (numpy out)."""
            vertices, joints = posed(frames)
            E = camera.extrinsics[frames].to(vertices.device)
            K = camera.K[frames].to(vertices.device)
            data = {"K": K.cpu().numpy()}
            if self.raster is not None:
                verts = world_to_camera(vertices, E)
                data["vertices"] = verts.cpu().numpy()
                data["normals"] = vertex_normals(verts, faces.to(verts.device), incidence).cpu().numpy()
            if skeleton_buf is not None:
                joints_cam = world_to_camera(joints, E)
                data["joints2d"] = project(joints_cam, K).cpu().numpy()
                data["in_front"] = (joints_cam[..., 2] > 1e-3).cpu().numpy()
                if self.joint_valid is not None:
                    data["in_front"] &= self.joint_valid
            return data

        # The next chunk's body-model work (torch, off the GIL) overlaps this chunk's rasterisation.
        chunks = [slice(s, min(s + chunk_size, num_frames)) for s in range(0, num_frames, chunk_size)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(prepare, chunks[0])
            for i, frames in enumerate(chunks):
                data = pending.result()
                if i + 1 < len(chunks):
                    pending = pool.submit(prepare, chunks[i + 1])
                n = frames.stop - frames.start
                out: dict[str, np.ndarray] = {}
                if self.raster is not None:
                    for t in range(n):
                        self.raster.render_into(
                            data["vertices"][t],
                            data["normals"][t],
                            data["K"][t],
                            normal_out=normal_buf[t],
                            color_out=color_buf[t],
                            depth_out=None if depth_buf is None else depth_buf[t],
                        )
                    views = {
                        "depth": color_buf[:n, ..., 3],
                        "normal": normal_buf[:n, ..., :3],
                        "semantic": color_buf[:n, ..., :3],
                        "mask": normal_buf[:n, ..., 3],
                        "depth_metric": None if depth_buf is None else depth_buf[:n],
                    }
                    out.update({m: views[m] for m in self.maps if m in views})
                if skeleton_buf is not None:
                    skeleton_buf[:n] = 0
                    for t in range(n):
                        draw_skeleton(skeleton_buf[t], data["joints2d"][t], visible=data["in_front"][t])
                    out["skeleton"] = skeleton_buf[:n]
                yield out

    def release(self) -> None:
        if self.raster is not None:
            self.raster.release()
            self.raster = None
