"""A minimal third-party studio pipeline with the ``animate`` task: each frame is the motion's
guidance normal map, tinted by a colour, over a plain background. It shows the whole contract:
a name, tasks, a documented Config (its knobs), the conditions it needs, where its weights come from
(none: it is embedded), a constructor, and one method per task.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from studio.pipeline import AnimateRequest, AnimateResult, PipelineBase


def parse_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb' or 'r,g,b' (0-255) -> (r, g, b); ValueError otherwise."""
    text = text.strip()
    if text.startswith("#") and len(text) == 7:
        return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
    parts = text.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and 0 <= int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    raise ValueError(f"color must be #rrggbb or r,g,b with 0-255 values, got {text!r}")


@dataclasses.dataclass
class ExampleConfig:
    """Settings of the example pipeline."""

    color: str = "#ff8800"
    """The tint, as #rrggbb or r,g,b."""
    strength: float = 0.6
    """How much of the tint is mixed into the normal map (0-1)."""

    def __post_init__(self) -> None:
        parse_color(self.color)
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be 0-1, got {self.strength}")


class ExamplePipeline(PipelineBase):
    """The guidance normal map, tinted (a plug-in example; no weights)."""

    name = "example"
    tasks = ("animate",)
    Config = ExampleConfig
    required_conditions = ("motion",)
    embedded = True
    chunk_frames = 16

    def __init__(self, config: ExampleConfig) -> None:
        self.config = config
        self.tint = np.array(parse_color(config.color), np.float32)

    @classmethod
    def load(cls, weights: Path | None, config: ExampleConfig) -> ExamplePipeline:
        return cls(config)

    def animate(self, request: AnimateRequest) -> AnimateResult:
        maps = request.motion.render(("normal", "mask"), size=request.size, body_model=request.body_model)
        normal = maps["normal"].astype(np.float32)
        body = maps["mask"][..., None] > 0
        s = self.config.strength
        frames = np.where(body, normal * (1 - s) + self.tint * s, 24.0)
        return AnimateResult(frames=frames.clip(0, 255).astype(np.uint8))
