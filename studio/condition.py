"""``HumanCondition``: the one interface between pose estimation and every generation pipeline.

A HumanCondition is a frozen, batched description of one person over T frames (T=1 for an image):
body-model parameters, a camera and a frame rate. Pipelines ask it for guidance maps with
``render()``; tools outside studio can read its ``.npz`` file with numpy alone.

File format (``save``/``load``), version 1, a numpy ``.npz`` with:

| key | dtype, shape | meaning |
|---|---|---|
| ``format`` | str | ``"studio.human_condition"`` |
| ``format_version`` | int | 1 |
| ``body_model`` | str | a key of ``studio.body.BODY_MODELS``: ``"anny"``, ``"smplx"`` or ``"smpl"`` |
| ``body/<field>`` | float32 [T, D] | body parameters: ``global_orient`` [T,3], ``body_pose`` [T,63], ``left_hand_pose``/``right_hand_pose`` [T,45], ``jaw_pose`` [T,3] (axis-angle, SMPL-X joint order, zero = T-pose with flat hands), ``transl`` [T,3] (metres), and the model's shape: ``phenotype`` [T,6] for anny, ``betas`` [T,N] and ``expression`` [T,M] for smplx, ``betas`` [T,10] for smpl |
| ``camera_K`` | float32 [T, 3, 3] | pinhole intrinsics in pixels of an image of ``image_size`` |
| ``camera_extrinsics`` | float32 [T, 4, 4] | world -> camera, OpenCV axes (x right, y down, z forward) |
| ``image_size`` | int [2] | (height, width) in pixels |
| ``fps`` | float | frames per second |
| ``joints3d`` | float32 [T, J, 3] | joints in camera space, metres (OpenCV axes) |
| ``joint_names`` | str [J] | SMPL-X's 55 joint names, then 21 surface landmarks |
| ``joint_valid`` | bool [J] | joints the body model has (anny has no jaw) |

The world frame is the body model's: Y up, the body facing +Z at zero rotation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from studio.camera import Camera, default_focal_length, project, world_to_camera
from studio.errors import StudioError
from studio.render import MAP_NAMES

FORMAT = "studio.human_condition"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class HumanCondition:
    """One person over T frames: body-model parameters, a camera and a frame rate."""

    body_model: str  # a key of studio.body.BODY_MODELS
    body: Mapping[str, torch.Tensor]  # field -> [T, D]; see the module docstring
    camera: Camera
    fps: float = 30.0

    def __post_init__(self) -> None:
        body = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in self.body.items()}
        if not body:
            raise StudioError("a HumanCondition needs body parameters")
        T = len(self.camera)
        for key, value in body.items():
            if value.ndim != 2 or value.shape[0] != T:
                raise StudioError(
                    f"body parameter '{key}' must be [T, D] with T={T} frames (the camera's), "
                    f"got {list(value.shape)}"
                )
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise StudioError(f"fps must be positive and finite, got {self.fps}")
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "fps", float(self.fps))

    @property
    def num_frames(self) -> int:
        return len(self.camera)

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, frames: int | slice | Sequence[int] | torch.Tensor) -> HumanCondition:
        """Frames of this condition; an int gives a one-frame condition."""
        if isinstance(frames, int):
            if not -self.num_frames <= frames < self.num_frames:
                raise IndexError(f"frame {frames} out of range for {self.num_frames} frames")
            frames = slice(frames % self.num_frames, frames % self.num_frames + 1)
        return HumanCondition(
            body_model=self.body_model,
            body={k: v[frames] for k, v in self.body.items()},
            camera=self.camera.index(frames),
            fps=self.fps,
        )

    @staticmethod
    def concat(parts: Sequence[HumanCondition]) -> HumanCondition:
        """Join conditions of the same body model, image size and fps in time."""
        if not parts:
            raise StudioError("no conditions to join")
        first = parts[0]
        for p in parts[1:]:
            if (p.body_model, p.camera.image_size, p.fps, set(p.body)) != (first.body_model, first.camera.image_size, first.fps, set(first.body)):
                raise StudioError("cannot join conditions with different body models, image sizes, fps or fields")
        camera = Camera(
            K=torch.cat([p.camera.K for p in parts]),
            extrinsics=torch.cat([p.camera.extrinsics for p in parts]),
            image_size=first.camera.image_size,
        )
        body = {k: torch.cat([p.body[k] for p in parts]) for k in first.body}
        return HumanCondition(body_model=first.body_model, body=body, camera=camera, fps=first.fps)

    def to(self, device: torch.device | str) -> HumanCondition:
        return dataclasses.replace(
            self, body={k: v.to(device) for k, v in self.body.items()}, camera=self.camera.to(device)
        )

    def posed(self, body_model=None, *, frames: slice | None = None):
        """Run the body model over (some of) the frames.

        Returns:
            BodyOutput in world coordinates (vertices [T, V, 3], joints [T, J, 3]).
        """
        model = self._model(body_model)
        params = {k: (v if frames is None else v[frames]) for k, v in self.body.items()}
        with torch.no_grad():
            return model({k: v.to(model.skin_weights.device) for k, v in params.items()})

    def _model(self, body_model=None):
        """The given body model (it must be this condition's), or this condition's loaded by name."""
        if body_model is None:
            from studio.body import load_body_model

            return load_body_model(self.body_model)
        if body_model.name != self.body_model:
            raise StudioError(f"this condition is for the '{self.body_model}' body model, not '{body_model.name}'")
        return body_model

    def skinning(self, body_model=None, *, canonical: str = "t", frames: slice | None = None):
        """Canonical vertices, faces, skin weights, bone names and parents, per-frame canonical ->
        posed bone transforms and pose-corrective offsets of (some of) the frames, for moving any
        points with the body (see ``studio.body.skinning``).

        Args:
            canonical: the canonical pose, "t" (all rotations zero) or "big" (legs spread).
        Returns:
            Skinning with vertices [V, 3], weights [V, B], transforms [T, B, 4, 4], offsets [T, V, 3].
        """
        from studio.body.skinning import body_skinning

        model = self._model(body_model)
        params = {k: (v if frames is None else v[frames]).to(model.skin_weights.device) for k, v in self.body.items()}
        with torch.no_grad():
            return body_skinning(model, params, canonical=canonical)

    def joints3d(self, body_model=None, *, chunk_size: int = 256) -> torch.Tensor:
        """Joints in camera space, metres (OpenCV axes): [T, J, 3]. The body model runs over chunks of
        frames, so memory stays bounded for long motions."""
        parts = []
        for start in range(0, self.num_frames, chunk_size):
            frames = slice(start, start + chunk_size)
            joints = self.posed(body_model, frames=frames).joints
            parts.append(world_to_camera(joints, self.camera.extrinsics[frames].to(joints.device)))
        return torch.cat(parts)

    def render(
        self,
        maps: Sequence[str] = MAP_NAMES,
        *,
        size: int | tuple[int, int] | None = None,
        body_model=None,
        chunk_size: int = 32,
    ) -> dict[str, np.ndarray]:
        """Render guidance maps for every frame (see ``studio.render`` for their encodings).

        Returns:
            map name -> [T, H, W, 3] uint8 (depth and mask: [T, H, W] uint8).
        """
        out: dict[str, np.ndarray] = {}
        start = 0
        for chunk in self.iter_render(maps, size=size, body_model=body_model, chunk_size=chunk_size):
            n = len(next(iter(chunk.values())))
            for name, value in chunk.items():  # chunk buffers are reused: copy once, into place
                if name not in out:
                    out[name] = np.empty((self.num_frames, *value.shape[1:]), dtype=value.dtype)
                out[name][start : start + n] = value
            start += n
        return out

    def iter_render(
        self,
        maps: Sequence[str] = MAP_NAMES,
        *,
        size: int | tuple[int, int] | None = None,
        body_model=None,
        chunk_size: int = 32,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Render guidance maps chunk by chunk, in bounded memory: yields dicts like ``render()``.

        The arrays of one chunk are reused for the next: copy what you keep."""
        from studio.render import GuidanceRenderer

        model = self._model(body_model)
        renderer = GuidanceRenderer(
            model.faces, model.part_labels, image_size=self.camera.resized(size).image_size, maps=maps, joint_valid=model.joint_valid
        )

        def posed(frames: slice) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.posed(model, frames=frames)
            return out.vertices, out.joints

        try:
            yield from renderer.iter_render(posed, self.camera, chunk_size=chunk_size)
        finally:
            renderer.release()

    def save(self, path: str | Path, *, body_model=None) -> Path:
        """Write the documented .npz (atomically), with ``joints3d`` and ``joint_names``."""
        from studio.body.joints import JOINT_NAMES
        from studio.media import atomic_path

        model = body_model
        if model is None:
            from studio.body import load_body_model

            model = load_body_model(self.body_model)
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "format_version": np.array(FORMAT_VERSION),
            "body_model": np.array(self.body_model),
            "camera_K": self.camera.K.cpu().numpy().astype(np.float32),
            "camera_extrinsics": self.camera.extrinsics.cpu().numpy().astype(np.float32),
            "image_size": np.array(self.camera.image_size, dtype=np.int64),
            "fps": np.array(self.fps, dtype=np.float64),
            "joints3d": self.joints3d(model).cpu().numpy().astype(np.float32),
            "joint_names": np.array(JOINT_NAMES),
            "joint_valid": model.joint_valid.cpu().numpy(),
        }
        for key, value in self.body.items():
            arrays[f"body/{key}"] = value.cpu().numpy().astype(np.float32)
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return path

    @staticmethod
    def load(path: str | Path) -> HumanCondition:
        """Read a condition written by ``save``; one clear StudioError for any malformed file."""
        from studio.media import read_npz

        path = Path(path)
        arrays = read_npz(path, what="studio condition (.npz) file")
        if str(arrays.get("format", "")) != FORMAT:
            raise StudioError(f"{path}: not a studio condition file (no 'format: {FORMAT}' entry)")
        version = int(arrays.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise StudioError(
                f"{path}: condition format version {version}, this studio reads version {FORMAT_VERSION}"
                + ("; upgrade studio" if version > FORMAT_VERSION else "")
            )
        for key in ("body_model", "camera_K", "camera_extrinsics", "image_size", "fps"):
            if key not in arrays:
                raise StudioError(f"{path}: missing entry '{key}'")
        try:
            arrays = _validated(arrays)
        except StudioError as exc:
            raise StudioError(f"{path}: {exc}") from None
        body = {k[5:]: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items() if k.startswith("body/")}
        try:
            h, w = (int(x) for x in arrays["image_size"])
            camera = Camera(
                K=torch.from_numpy(arrays["camera_K"].astype(np.float32)),
                extrinsics=torch.from_numpy(arrays["camera_extrinsics"].astype(np.float32)),
                image_size=(h, w),
            )
            cond = HumanCondition(
                body_model=str(arrays["body_model"]), body=body, camera=camera, fps=float(arrays["fps"])
            )
        except (StudioError, ValueError, TypeError) as exc:
            raise StudioError(f"{path}: {exc}") from exc
        from studio.body import body_model_param_dims

        dims = body_model_param_dims(cond.body_model)
        for key, value in cond.body.items():
            if key not in dims:
                raise StudioError(f"{path}: unknown body parameter '{key}' for the {cond.body_model} body model")
            if dims[key] is not None and value.shape[1] != dims[key]:
                raise StudioError(f"{path}: body parameter '{key}' must be [T, {dims[key]}], got {list(value.shape)}")
        return cond


def _validated(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The numbers of a condition file checked before use: finite, in range, a bounded frame count."""
    from studio import validate

    K = np.asarray(arrays["camera_K"])
    if K.ndim != 3:
        raise StudioError(f"camera_K must be [T, 3, 3], got {list(K.shape)}")
    validate.frame_count(K.shape[0], what="the motion")
    validate.intrinsics(K)
    validate.finite(arrays["camera_extrinsics"], name="camera_extrinsics", limit=validate.MAX_COORDINATE)
    size = validate.finite(arrays["image_size"], name="image_size")
    if size.shape != (2,) or size.min() < 1 or size.max() > 65536:
        raise StudioError(f"image_size must be (height, width) of 1..65536 pixels, got {size.tolist()}")
    fps = validate.finite(arrays["fps"], name="fps")
    if fps.size != 1:
        raise StudioError(f"fps must be one number, got {list(fps.shape)}")
    validate.fps(float(fps.reshape(-1)[0]))
    for key, value in arrays.items():
        if key.startswith("body/"):
            validate.finite(value, name=f"body parameter '{key[5:]}'", limit=validate.MAX_COORDINATE)
    return arrays


__all__ = ["FORMAT", "FORMAT_VERSION", "Camera", "HumanCondition", "default_focal_length", "project", "world_to_camera"]
