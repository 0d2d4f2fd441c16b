"""``mesh``: studio's embedded animation pipeline. It needs no weights: the reference's fitted body is
textured from the photo (see ``avatar``), the person is inpainted out of the background, and the
avatar is rendered in every pose of the motion. Classical and deterministic; registered through the
``studio.pipelines`` entry point like any other pipeline.

What the hands hold (``studio.animate.held``) is cut out with the person: it is inpainted out of the
background too and drawn at the hand in every frame. When the motion's camera turns (a handheld video
reenacting itself) the background turns with it.

The background and the avatar's texture depend only on the photo, its mask, its fit and the output
size, so they are cached per reference (``studio.animate.cache``): animating the same photo again
starts rendering at once.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from studio.pipeline import AnimateRequest, AnimateResult, PipelineBase

BACKGROUND_COLORS = {"black": (0, 0, 0), "white": (255, 255, 255), "green": (0, 177, 64)}


@dataclasses.dataclass
class MeshConfig:
    """Settings of the mesh pipeline."""

    supersample: int = 2
    """Frames are rendered this many times larger and reduced, which anti-aliases the silhouette (1-4)."""
    background: Literal["inpaint", "black", "white", "green"] = "inpaint"
    """What is behind the person: the photo with the person inpainted out, or a plain colour (green for keying)."""

    def __post_init__(self) -> None:
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"supersample must be 1-4, got {self.supersample}")
        if self.background not in ("inpaint", *BACKGROUND_COLORS):
            raise ValueError(f"background must be inpaint, black, white or green, got {self.background!r}")


class MeshPipeline(PipelineBase):
    """The person of the photo as a textured body-model avatar (embedded; no weights, CPU)."""

    name = "mesh"
    tasks = ("animate",)
    Config = MeshConfig
    required_conditions = ("reference", "reference_mask", "reference_condition", "motion")
    embedded = True
    default_for = ("animate",)
    chunk_frames = 16

    def __init__(self, config: MeshConfig | None = None) -> None:
        self.config = config or MeshConfig()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._background: Future | None = None
        self._renderer = None
        self._reference_id: int | None = None
        self.notes: list[str] = []  # what the job should tell the user (something held was found)

    @classmethod
    def load(cls, weights: Path | None, config: MeshConfig) -> MeshPipeline:
        return cls(config)

    def _make_background(self, request: AnimateRequest, mask: np.ndarray | None = None) -> np.ndarray:
        """The photo without the person (``mask``, else the request's person mask) at the output size, or a plain colour."""
        h, w = request.size
        mask = request.reference_mask if mask is None else mask
        if self.config.background == "inpaint":
            from studio.animate.cache import cache_key, load_entry, save_entry
            from studio.texture import inpaint_person

            key = cache_key("mesh-background", request.reference, mask, list(request.size))
            cached = load_entry(key)
            if cached is not None and cached.get("background", np.zeros(0)).shape == (h, w, 3):
                return cached["background"]
            background = inpaint_person(request.reference, mask, (h, w))
            save_entry(key, {"background": background})
            return background
        return np.broadcast_to(np.array(BACKGROUND_COLORS[self.config.background], np.uint8), (h, w, 3)).copy()

    def start(self, request: AnimateRequest) -> None:
        """Inpaint the background (it needs only the photo and the mask) while the reference is fitted."""
        if self._background is None and request.reference is not None and request.reference_mask is not None:
            self._background = self._pool.submit(self._make_background, request)

    def _build_avatar(self, request: AnimateRequest, background: np.ndarray):
        """The textured avatar of the request's reference (its texture cached per photo, mask, fit and
        size), with what the hands hold as layers and, if they hold something, a background without it."""
        from studio.animate.cache import cache_key, load_entry, save_entry
        from studio.animate.held import find_held_objects
        from studio.texture import MeshAvatar, build_avatar

        cond = request.reference_condition
        held_mask, layers = find_held_objects(request.reference, request.reference_mask, cond, body_model=request.body_model)
        # The texture comes from the person only, never from what they hold.
        mask = np.where(held_mask > 127, 0, request.reference_mask).astype(np.uint8)
        if layers:
            self.notes.append(f"the {' and '.join(layer.hand for layer in layers)} hand holds something: it moves with the hand")
            if self.config.background == "inpaint":
                background = self._make_background(request, np.maximum(request.reference_mask, held_mask))
        fit = [cond.body_model, *(v.numpy() for _, v in sorted(cond.body.items())), cond.camera.K.numpy(), cond.camera.extrinsics.numpy()]
        key = cache_key("mesh-avatar", request.reference, mask, list(request.size), *fit)
        cached = load_entry(key)
        if cached is not None and cached["texture_coords"].shape == (request.body_model.num_vertices, 2):
            avatar = MeshAvatar(request.reference, cached["texture_coords"], background, float(cached["visible_fraction"]))
        else:
            avatar = build_avatar(request.reference, mask, cond, body_model=request.body_model, output_size=request.size, background=background)
            save_entry(key, {"texture_coords": avatar.texture_coords, "visible_fraction": np.array(avatar.visible_fraction)})
        # The background is a far-away backdrop: when the motion's camera turns (a handheld video
        # reenacting itself), it turns with it.
        rotation = cond.camera.extrinsics[0, :3, :3].numpy().astype(np.float64)
        return dataclasses.replace(avatar, held=layers, camera_rotation=rotation)

    def animate(self, request: AnimateRequest) -> AnimateResult:
        """Frames [T, H, W, 3] uint8 of the avatar in each pose of ``request.motion``."""
        if self._renderer is None or self._reference_id != id(request.reference):
            from studio.texture import AvatarRenderer

            self.close_renderer()
            self.start(request)
            background = self._background.result()
            self._background = None
            avatar = self._build_avatar(request, background)
            self._renderer = AvatarRenderer(avatar, request.body_model, output_size=request.size, supersample=self.config.supersample)
            self._reference_id = id(request.reference)
        frames = self._renderer.render(request.motion)
        if request.on_progress is not None:
            request.on_progress(len(frames), len(frames))
        return AnimateResult(frames=frames)

    def close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.release()
            self._renderer = None

    def close(self) -> None:
        self.close_renderer()
        self._pool.shutdown(cancel_futures=True)


__all__ = ["MeshConfig", "MeshPipeline"]
