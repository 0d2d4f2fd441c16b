"""The object library: procedural objects with named parts at realistic, parameterised sizes, and
user meshes (.glb, .gltf, .obj) with parts found from a hint.

Every object lives in its own frame: metres, Y up, resting on the ground at y = 0, centred on x = z = 0,
with the side a person approaches (a chair's front, a cart's handle, a door's handle) at +Z.

An object has parts (``Part``: primitives, a colour, and whether it is solid) and roles: the generic
names interactions use ("seat", "grip", "handle", ...) mapped to its own part names. Procedural parts
are unions of primitives with exact signed distances (``studio``'s penetration and contact measures use
them directly); a mesh object samples a signed-distance grid and its parts are point samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import trimesh

from pipelines.interfusion.primitives import Box, Capsule, Cylinder, Primitive, Sphere, Torus, union_sdf
from studio.errors import StudioError

Color = tuple[int, int, int]
WOOD: Color = (176, 122, 74)
DARK_WOOD: Color = (120, 80, 50)
METAL: Color = (150, 155, 165)
BLACK: Color = (40, 40, 45)
FABRIC: Color = (70, 110, 170)
RED: Color = (200, 60, 50)
CARDBOARD: Color = (196, 160, 110)
WHITE: Color = (225, 225, 220)
GLASS: Color = (150, 200, 220)
GREEN: Color = (70, 150, 80)
ORANGE: Color = (230, 140, 40)


@dataclasses.dataclass(frozen=True)
class Part:
    """A named part of an object: a union of primitives in the object's frame."""

    name: str
    primitives: tuple[Primitive, ...]
    color: Color = WOOD
    solid: bool = True  # False: a contact-only patch (a face of a box, a rim), not drawn nor solid


class ObjectModel:
    """A procedural object: parts, roles, and what placing it allows.

    Attributes:
        name: the library name ("chair", ...) or the mesh file's stem.
        parts: part name -> Part.
        roles: generic role ("seat", "grip", ...) -> part name.
        grounded: it stands on the ground (its lowest point at y = 0); otherwise it is held.
        upright: only turns about the vertical (furniture); otherwise it may tilt (tools, held things).
        front: it has a front (+Z) that a person uses (a chair's seat opening, a shelf's open side).
        sizes: the size parameters it was built with (metres).
    """

    def __init__(
        self,
        name: str,
        parts: list[Part],
        roles: dict[str, str],
        *,
        grounded: bool,
        upright: bool,
        sizes: dict[str, float],
        front: bool = False,
    ):
        self.name = name
        self.front = front  # it has a front (+Z) that a person uses: a chair, a shelf, a door
        self.parts = {p.name: p for p in parts}
        missing = {r: p for r, p in roles.items() if p not in self.parts}
        if missing:
            raise ValueError(f"{name}: roles {missing} name parts it does not have")
        self.roles = dict(roles)
        self.grounded, self.upright = grounded, upright
        self.sizes = dict(sizes)
        self._solid = [prim for p in parts if p.solid for prim in p.primitives]

    def part_for(self, role: str) -> str | None:
        """The part that plays ``role`` (a role may also name a part directly)."""
        return self.roles.get(role, role if role in self.parts else None)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance of points [N, 3] (object frame) to the solid object: [N] metres."""
        return union_sdf(self._solid, points)

    def part_distance(self, part: str, points: torch.Tensor) -> torch.Tensor:
        """Unsigned distance of points [N, 3] to a part's surface (0 inside it): [N] metres."""
        return union_sdf(list(self.parts[part].primitives), points).clamp_min(0)

    def meshes(self) -> dict[str, trimesh.Trimesh]:
        """One coloured mesh per solid part (object frame)."""
        out = {}
        for part in self.parts.values():
            if not part.solid:
                continue
            mesh = trimesh.util.concatenate([p.mesh() for p in part.primitives])
            mesh.visual.face_colors = np.array([*part.color, 255], dtype=np.uint8)
            out[part.name] = mesh
        return out

    def mesh(self) -> trimesh.Trimesh:
        """All solid parts in one coloured mesh (object frame)."""
        return trimesh.util.concatenate(list(self.meshes().values()))

    def surface_samples(self, count: int, *, seed: int = 0) -> torch.Tensor:
        """About ``count`` points on the solid object's surface (points of one primitive that lie
        inside another are dropped): [M, 3] object frame."""
        rng = np.random.default_rng(seed)
        meshes = [p.mesh() for p in self._solid]
        areas = np.array([m.area for m in meshes])
        counts = np.maximum(64, np.round(count * areas / areas.sum()).astype(int))  # small parts (a saddle, a handle) too
        points = [trimesh.sample.sample_surface(m, int(c), seed=int(rng.integers(1 << 31)))[0] for m, c in zip(meshes, counts)]
        pts = torch.as_tensor(np.concatenate(points), dtype=torch.float32)
        keep = self.sdf(pts) > -1e-3
        return pts[keep]

    def bounds(self) -> np.ndarray:
        """[2, 3] lower and upper corners of the solid object."""
        return self.mesh().bounds

    def anchor(self, part: str) -> torch.Tensor:
        """A representative point of a part: the centre of its top, [3] (object frame)."""
        lo, hi = self._part_bounds(part)
        return torch.tensor([(lo[0] + hi[0]) / 2, hi[1], (lo[2] + hi[2]) / 2], dtype=torch.float32)

    def footprint(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, z) rectangle a part covers on the ground plane, shrunk by a quarter of its size or
        5 cm at most on each side (where a supported body region's centre belongs): lo [2], hi [2]."""
        lo, hi = self._part_bounds(part)
        return _shrunk(torch.tensor(lo[[0, 2]], dtype=torch.float32), torch.tensor(hi[[0, 2]], dtype=torch.float32))

    def _part_bounds(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        bounds = np.array([p.mesh().bounds for p in self.parts[part].primitives])
        return bounds[:, 0].min(0), bounds[:, 1].max(0)


def _shrunk(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    margin = ((hi - lo) / 4).clamp(max=0.05)
    return lo + margin, hi - margin


# --- the procedural library --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    """How to build one library object: its size parameters (default, low, high) in metres, its
    builder, a short description, and the words that name it."""

    name: str
    sizes: dict[str, tuple[float, float, float]]
    build: Callable[[dict[str, float]], ObjectModel]
    words: tuple[str, ...]
    description: str


def _legs(width: float, depth: float, height: float, thickness: float, *, inset: float = 0.02) -> tuple[Primitive, ...]:
    x, z = width / 2 - inset - thickness / 2, depth / 2 - inset - thickness / 2
    return tuple(Box((sx * x, height / 2, sz * z), (thickness, height, thickness)) for sx in (-1, 1) for sz in (-1, 1))


def _box_faces(center: tuple[float, float, float], size: tuple[float, float, float]) -> dict[str, Primitive]:
    """Flat patches on the six faces of a box (for contact-only parts)."""
    cx, cy, cz = center
    sx, sy, sz = size
    return {
        "top_face": Box((cx, cy + sy / 2, cz), (sx, 0.0, sz)),
        "left_face": Box((cx + sx / 2, cy, cz), (0.0, sy, sz)),
        "right_face": Box((cx - sx / 2, cy, cz), (0.0, sy, sz)),
        "front_face": Box((cx, cy, cz + sz / 2), (sx, sy, 0.0)),
        "back_face": Box((cx, cy, cz - sz / 2), (sx, sy, 0.0)),
    }


def _faces_parts(center, size, names: tuple[str, ...]) -> list[Part]:
    faces = _box_faces(center, size)
    return [Part(n, (faces[n],), solid=False) for n in names]


def build_chair(s: dict[str, float]) -> ObjectModel:
    h, w, d, bh = s["seat_height"], s["seat_width"], s["seat_depth"], s["back_height"]
    t = 0.04
    parts = [
        Part("seat", (Box((0, h - t / 2, 0), (w, t, d)),), WOOD),
        Part("back", (Box((0, h + bh / 2, -d / 2 + 0.015), (w, bh, 0.03)),), WOOD),
        Part("legs", _legs(w, d, h - t, 0.035), DARK_WOOD),
    ]
    return ObjectModel(
        "chair", parts, {"seat": "seat", "top": "seat", "backrest": "back"}, grounded=True, upright=True, sizes=s, front=True
    )


def build_stool(s: dict[str, float]) -> ObjectModel:
    h, r = s["seat_height"], s["seat_radius"]
    t = 0.05
    spread = r * 1.05
    legs = tuple(
        Capsule((spread * math.cos(a), 0.015, spread * math.sin(a)), (0.6 * r * math.cos(a), h - t, 0.6 * r * math.sin(a)), 0.015)
        for a in (math.pi / 4, 3 * math.pi / 4, 5 * math.pi / 4, 7 * math.pi / 4)
    )
    parts = [
        Part("seat", (Cylinder((0, h - t, 0), (0, h, 0), r),), RED),
        Part("legs", legs, METAL),
        Part("footrest", (Torus((0, 0.3 * h, 0), (0, 1, 0), 0.8 * spread + 0.2 * 0.6 * r + 0.01, 0.012),), METAL),
    ]
    return ObjectModel(
        "stool", parts, {"seat": "seat", "top": "seat", "footrest": "footrest"}, grounded=True, upright=True, sizes=s
    )


def build_bench(s: dict[str, float]) -> ObjectModel:
    h, length, d = s["seat_height"], s["length"], s["seat_depth"]
    t = 0.05
    parts = [
        Part("seat", (Box((0, h - t / 2, 0), (length, t, d)),), WOOD),
        Part(
            "legs",
            tuple(Box((x, (h - t) / 2, 0), (0.06, h - t, d - 0.04)) for x in (-length / 2 + 0.12, length / 2 - 0.12)),
            DARK_WOOD,
        ),
    ]
    return ObjectModel("bench", parts, {"seat": "seat", "lie": "seat", "top": "seat"}, grounded=True, upright=True, sizes=s)


def build_sofa(s: dict[str, float]) -> ObjectModel:
    h, w, d, bh = s["seat_height"], s["width"], s["depth"], s["back_height"]
    arm = 0.18
    base = 0.2
    parts = [
        Part("base", (Box((0, base / 2, 0), (w, base, d)),), BLACK),
        Part("seat", (Box((0, (base + h) / 2, 0.1), (w - 2 * arm, h - base, d - 0.2)),), FABRIC),
        Part("back", (Box((0, (base + h + bh) / 2, -d / 2 + 0.1), (w, h + bh - base, 0.2)),), FABRIC),
        Part(
            "arms",
            tuple(Box((sx * (w / 2 - arm / 2), (base + h + 0.2) / 2, 0.1), (arm, h + 0.2 - base, d - 0.2)) for sx in (-1, 1)),
            FABRIC,
        ),
    ]
    return ObjectModel(
        "sofa",
        parts,
        {"seat": "seat", "lie": "seat", "top": "seat", "backrest": "back"},
        grounded=True,
        upright=True,
        sizes=s,
        front=True,
    )


def build_table(s: dict[str, float], name: str = "table") -> ObjectModel:
    h, w, d = s["height"], s["width"], s["depth"]
    t = 0.04
    parts = [Part("top", (Box((0, h - t / 2, 0), (w, t, d)),), WOOD), Part("legs", _legs(w, d, h - t, 0.05), DARK_WOOD)]
    roles = {"top": "top", "seat": "top", "lie": "top", "wipe": "top", "lean_hands": "top"}
    return ObjectModel(name, parts, roles, grounded=True, upright=True, sizes=s)


def build_desk(s: dict[str, float]) -> ObjectModel:
    h, w, d = s["height"], s["width"], s["depth"]
    t = 0.03
    parts = [
        Part("top", (Box((0, h - t / 2, 0), (w, t, d)),), WHITE),
        Part("panels", tuple(Box((sx * (w / 2 - 0.015), (h - t) / 2, 0), (0.03, h - t, d - 0.02)) for sx in (-1, 1)), METAL),
        Part("drawers", (Box((w / 2 - 0.25, h - t - 0.2, 0.0), (0.4, 0.4, d - 0.06)),), METAL),
    ]
    roles = {"top": "top", "seat": "top", "wipe": "top", "lean_hands": "top"}
    return ObjectModel("desk", parts, roles, grounded=True, upright=True, sizes=s)


def build_bed(s: dict[str, float]) -> ObjectModel:
    h, length, w = s["height"], s["length"], s["width"]
    frame = h - 0.22
    parts = [
        Part("frame", (Box((0, frame / 2, 0), (w + 0.06, frame, length + 0.06)),), DARK_WOOD),
        Part("mattress", (Box((0, frame + 0.11, 0), (w, 0.22, length)),), WHITE),
        Part("headboard", (Box((0, (h + 0.45) / 2, -length / 2 - 0.05), (w + 0.06, h + 0.45, 0.06)),), DARK_WOOD),
        Part("pillow", (Box((0, h + 0.06, -length / 2 + 0.25), (0.6, 0.12, 0.35)),), FABRIC),
    ]
    return ObjectModel(
        "bed",
        parts,
        {"seat": "mattress", "lie": "mattress", "top": "mattress", "headrest": "pillow"},
        grounded=True,
        upright=True,
        sizes=s,
    )


def build_box(s: dict[str, float], name: str = "box", color: Color = CARDBOARD) -> ObjectModel:
    a = s["size"]
    size = (a, s["height_ratio"] * a, a)
    center = (0.0, size[1] / 2, 0.0)
    parts = [Part("body", (Box(center, size),), color)] + _faces_parts(
        center, size, ("top_face", "left_face", "right_face", "front_face")
    )
    roles = {
        "top": "top_face", "seat": "top_face", "grip_left": "left_face", "grip_right": "right_face", "push": "front_face",
        "kick": "body", "hug": "body", "grip": "body", "wipe": "top_face", "step_low": "top_face",
    }  # fmt: skip
    return ObjectModel(name, parts, roles, grounded=False, upright=True, sizes=s)


def build_toolbox(s: dict[str, float]) -> ObjectModel:
    w, h, d = s["width"], s["height"], 0.22
    parts = [
        Part("body", (Box((0, h / 2, 0), (w, h, d)),), RED),
        Part(
            "handle",
            (
                Cylinder((-0.09, h + 0.05, 0), (0.09, h + 0.05, 0), 0.014),
                Box((-0.1, h + 0.025, 0), (0.02, 0.05, 0.02)),
                Box((0.1, h + 0.025, 0), (0.02, 0.05, 0.02)),
            ),
            BLACK,
        ),
    ]
    return ObjectModel(
        "toolbox", parts, {"grip": "handle", "handle": "handle", "top": "body"}, grounded=False, upright=False, sizes=s
    )


def build_ball(s: dict[str, float]) -> ObjectModel:
    r = s["radius"]
    parts = [Part("surface", (Sphere((0, r, 0), r),), ORANGE)]
    roles = {r_: "surface" for r_ in ("grip", "grip_left", "grip_right", "kick", "hug", "seat", "reach")}
    return ObjectModel("ball", parts, roles, grounded=False, upright=False, sizes=s)


def build_bottle(s: dict[str, float]) -> ObjectModel:
    r, h = s["radius"], s["height"]
    body = 0.68 * h
    parts = [
        Part("body", (Cylinder((0, 0, 0), (0, body, 0), r),), GREEN),
        Part("neck", (Cylinder((0, body - 0.005, 0), (0, h - 0.02, 0), 0.45 * r),), GREEN),
        Part("cap", (Cylinder((0, h - 0.02, 0), (0, h, 0), 0.5 * r),), WHITE),
    ]
    return ObjectModel("bottle", parts, {"grip": "body", "rim": "cap", "reach": "body"}, grounded=False, upright=False, sizes=s)


def build_cup(s: dict[str, float]) -> ObjectModel:
    r, h = s["radius"], s["height"]
    parts = [
        Part("body", (Cylinder((0, 0, 0), (0, h, 0), r),), WHITE),
        Part("handle", (Torus((r + 0.02, h / 2, 0), (0, 0, 1), 0.028, 0.007),), WHITE),
        Part("rim", (Torus((0, h, 0), (0, 1, 0), r, 0.0),), solid=False),
    ]
    return ObjectModel(
        "cup", parts, {"grip": "body", "rim": "rim", "handle": "handle", "reach": "body"}, grounded=False, upright=False, sizes=s
    )


def build_ladder(s: dict[str, float]) -> ObjectModel:
    h, w, step = s["height"], s["width"], s["rung_spacing"]
    rungs = tuple(Cylinder((-w / 2, y, 0), (w / 2, y, 0), 0.016) for y in np.arange(step, h - 0.1, step))
    rails = tuple(Box((sx * (w / 2 + 0.02), h / 2, 0), (0.04, h, 0.06)) for sx in (-1, 1))
    parts = [
        Part("rails", rails, METAL),
        Part("rungs", rungs, METAL),
        Part("holds", rails + rungs, solid=False),
    ]  # hands hold rungs or rails
    return ObjectModel(
        "ladder", parts, {"rungs": "rungs", "rails": "rails", "grips": "holds"}, grounded=True, upright=True, sizes=s, front=True
    )


def build_steps(s: dict[str, float]) -> ObjectModel:
    rise, tread, w = s["rise"], s["tread"], s["width"]
    # step k: a block k rises tall from the back (z = -1.5 treads) to its front edge, one tread further
    # back per step; the person comes from +Z
    steps = [
        Part(f"step{k}", (Box((0, k * rise / 2, -(k - 1) * tread / 2), (w, k * rise, (4 - k) * tread)),), (190, 190, 185))
        for k in (1, 2, 3)
    ]
    treads = [Part(f"tread{k}", (Box((0, k * rise, (2 - k) * tread), (w, 0.0, tread)),), solid=False) for k in (1, 2, 3)]
    roles = {"step_low": "tread1", "step_high": "tread2", "top": "tread1", "step_top": "tread3"}
    return ObjectModel("steps", steps + treads, roles, grounded=True, upright=True, sizes=s, front=True)


def build_bicycle(s: dict[str, float]) -> ObjectModel:
    r, base, saddle = s["wheel_radius"], s["wheelbase"], s["saddle_height"]
    bar_y = saddle + 0.12
    crank = (0.0, 0.3, 0.0)
    parts = [
        Part("wheels", tuple(Torus((0, r, z), (1, 0, 0), r - 0.02, 0.02) for z in (-base / 2, base / 2)), BLACK),
        Part(
            "frame",
            (
                Capsule((0, r, -base / 2), crank, 0.018),
                Capsule(crank, (0, saddle - 0.05, -0.12), 0.018),
                Capsule((0, saddle - 0.05, -0.12), (0, bar_y - 0.1, base / 2 - 0.12), 0.018),
                Capsule(crank, (0, bar_y - 0.1, base / 2 - 0.12), 0.018),
                Capsule((0, bar_y - 0.1, base / 2 - 0.12), (0, r, base / 2), 0.016),
                Capsule((0, r, -base / 2), (0, saddle - 0.05, -0.12), 0.014),
                Capsule((0, bar_y - 0.1, base / 2 - 0.12), (0, bar_y, base / 2 - 0.15), 0.016),
            ),
            RED,
        ),  # fmt: skip
        Part("saddle", (Box((0, saddle, -0.12), (0.16, 0.05, 0.26)),), BLACK),
        Part("handlebar", (Cylinder((-0.28, bar_y, base / 2 - 0.15), (0.28, bar_y, base / 2 - 0.15), 0.014),), BLACK),
        Part("left_pedal", (Box((0.14, 0.3, 0.0), (0.09, 0.025, 0.11)),), BLACK),
        Part("right_pedal", (Box((-0.14, 0.3, 0.0), (0.09, 0.025, 0.11)),), BLACK),
    ]
    roles = {
        "saddle": "saddle",
        "handlebar": "handlebar",
        "left_pedal": "left_pedal",
        "right_pedal": "right_pedal",
        "seat": "saddle",
    }
    return ObjectModel("bicycle", parts, roles, grounded=True, upright=True, sizes=s, front=True)


def build_skateboard(s: dict[str, float]) -> ObjectModel:
    length = s["length"]
    deck_y = 0.085
    parts = [
        Part("deck", (Box((0, deck_y, 0), (length, 0.018, 0.21)),), (90, 60, 160)),
        Part(
            "wheels",
            tuple(
                Cylinder((sx * (length / 2 - 0.12), 0.028, -0.09), (sx * (length / 2 - 0.12), 0.028, 0.09), 0.028)
                for sx in (-1, 1)
            ),
            WHITE,
        ),
        Part("trucks", tuple(Box((sx * (length / 2 - 0.12), 0.06, 0), (0.04, 0.035, 0.14)) for sx in (-1, 1)), METAL),
    ]
    return ObjectModel("skateboard", parts, {"deck": "deck", "top": "deck"}, grounded=True, upright=True, sizes=s)


def build_cart(s: dict[str, float]) -> ObjectModel:
    length, w, handle = s["length"], s["width"], s["handle_height"]
    parts = [
        Part("basket", (Box((0, 0.65, 0), (w, 0.45, length)),), METAL),
        Part(
            "chassis",
            (Box((0, 0.2, 0), (w - 0.1, 0.03, length)),)
            + tuple(
                Capsule(
                    (sx * (w / 2 - 0.03), 0.2, sz * (length / 2 - 0.05)),
                    (sx * (w / 2 - 0.03), 0.45, sz * (length / 2 - 0.05)),
                    0.012,
                )
                for sx in (-1, 1)
                for sz in (-1, 1)
            ),
            METAL,
        ),
        Part(
            "wheels",
            tuple(
                Cylinder(
                    (sx * (w / 2 - 0.05) - 0.02, 0.06, sz * (length / 2 - 0.08)),
                    (sx * (w / 2 - 0.05) + 0.02, 0.06, sz * (length / 2 - 0.08)),
                    0.06,
                )
                for sx in (-1, 1)
                for sz in (-1, 1)
            ),
            BLACK,
        ),
        Part(
            "handle",
            (Cylinder((-w / 2, handle, length / 2 + 0.12), (w / 2, handle, length / 2 + 0.12), 0.016),)
            + tuple(
                Capsule((sx * (w / 2 - 0.02), 0.85, length / 2), (sx * (w / 2 - 0.02), handle, length / 2 + 0.12), 0.012)
                for sx in (-1, 1)
            ),
            RED,
        ),
    ]
    roles = {"handle": "handle", "push": "handle", "pull": "handle", "grip": "handle"}
    return ObjectModel("cart", parts, roles, grounded=True, upright=True, sizes=s, front=True)


def build_suitcase(s: dict[str, float]) -> ObjectModel:
    h, w, handle = s["height"], s["width"], s["handle_height"]
    d = 0.24
    parts = [
        Part("body", (Box((0, 0.04 + h / 2, 0), (w, h, d)),), (60, 70, 90)),
        Part(
            "wheels",
            tuple(
                Cylinder(
                    (sx * (w / 2 - 0.04) - 0.015, 0.035, -d / 2 + 0.04),
                    (sx * (w / 2 - 0.04) + 0.015, 0.035, -d / 2 + 0.04),
                    0.035,
                )
                for sx in (-1, 1)
            ),
            BLACK,
        ),
        Part(
            "handle",
            (Cylinder((-0.11, handle, -d / 2 + 0.02), (0.11, handle, -d / 2 + 0.02), 0.014),)
            + tuple(Box((sx * 0.1, (h + handle) / 2 + 0.02, -d / 2 + 0.02), (0.016, handle - h - 0.02, 0.016)) for sx in (-1, 1)),
            BLACK,
        ),
    ]
    return ObjectModel(
        "suitcase",
        parts,
        {"handle": "handle", "pull": "handle", "grip": "handle", "push": "body"},
        grounded=True,
        upright=False,
        sizes=s,
    )


def build_pillow(s: dict[str, float]) -> ObjectModel:
    w, h = s["width"], s["height"]
    t = 0.14
    # a slab with rounded sides: a box between two upright cylinders
    sides = tuple(Cylinder((sx * (w / 2 - t / 2), 0.0, 0), (sx * (w / 2 - t / 2), h, 0), t / 2) for sx in (-1, 1))
    parts = [Part("body", (Box((0, h / 2, 0), (w - t, h, t)),) + sides, FABRIC)]
    roles = {"hug": "body", "grip": "body", "grip_left": "body", "grip_right": "body", "seat": "body"}
    return ObjectModel("pillow", parts, roles, grounded=False, upright=False, sizes=s)


def build_shelf(s: dict[str, float]) -> ObjectModel:
    h, w, d = s["height"], s["width"], 0.32
    boards = tuple(Box((0, y, 0), (w - 0.04, 0.025, d)) for y in np.linspace(0.05, h - 0.0125, 5))
    parts = [
        Part(
            "frame",
            tuple(Box((sx * (w / 2 - 0.01), h / 2, 0), (0.02, h, d)) for sx in (-1, 1))
            + (Box((0, h / 2, -d / 2 + 0.005), (w, h, 0.01)),),
            WOOD,
        ),
        Part("shelves", boards[:-1], WOOD),
        Part("top_shelf", boards[-1:], WOOD),
    ]
    return ObjectModel(
        "shelf",
        parts,
        {"reach": "top_shelf", "top": "top_shelf", "grip": "top_shelf"},
        grounded=True,
        upright=True,
        sizes=s,
        front=True,
    )


def build_wall(s: dict[str, float]) -> ObjectModel:
    h, w = s["height"], s["width"]
    t = 0.12
    center, size = (0.0, h / 2, -t / 2), (w, h, t)
    parts = [Part("wall", (Box(center, size),), (205, 190, 170))] + _faces_parts(center, size, ("front_face",))
    return ObjectModel(
        "wall",
        parts,
        {"surface": "front_face", "wipe": "front_face", "push": "front_face"},
        grounded=True,
        upright=True,
        sizes=s,
        front=True,
    )


def build_window(s: dict[str, float]) -> ObjectModel:
    h, w, sill = s["height"], s["width"], s["sill_height"]
    t = 0.12
    top = sill + s["pane_height"]
    parts = [
        Part("wall", (Box((0, sill / 2, -t / 2), (w, sill, t)), Box((0, (top + h) / 2, -t / 2), (w, h - top, t)),
                      Box((-w / 2 + 0.3, (sill + top) / 2, -t / 2), (0.6, top - sill, t)), Box((w / 2 - 0.3, (sill + top) / 2, -t / 2), (0.6, top - sill, t))), (205, 190, 170)),
        Part("pane", (Box((0, (sill + top) / 2, -t / 2), (w - 1.2, top - sill, 0.02)),), GLASS),
    ]  # fmt: skip
    return ObjectModel(
        "window", parts, {"wipe": "pane", "surface": "wall", "pane": "pane"}, grounded=True, upright=True, sizes=s, front=True
    )


def build_door(s: dict[str, float]) -> ObjectModel:
    h, w = s["height"], s["width"]
    t = 0.04
    center, size = (0.0, h / 2, -t / 2), (w, h, t)
    parts = [
        Part("panel", (Box(center, size),), (235, 235, 230)),
        Part(
            "handle",
            (
                Capsule((-w / 2 + 0.08, 1.0, 0.055), (-w / 2 + 0.2, 1.0, 0.055), 0.011),
                Cylinder((-w / 2 + 0.08, 1.0, 0.0), (-w / 2 + 0.08, 1.0, 0.055), 0.008),
            ),
            METAL,
        ),
    ] + _faces_parts(center, size, ("front_face",))
    roles = {"surface": "front_face", "push": "front_face", "pull": "handle", "handle": "handle", "grip": "handle"}
    return ObjectModel("door", parts, roles, grounded=True, upright=True, sizes=s, front=True)


def build_broom(s: dict[str, float]) -> ObjectModel:
    length = s["length"]
    parts = [
        Part("head", (Box((0, 0.04, 0), (0.3, 0.08, 0.06)),), (200, 170, 60)),
        Part("handle", (Capsule((0, 0.08, 0), (0, length, 0), 0.013),), WOOD),
    ]
    return ObjectModel("broom", parts, {"handle": "handle", "grip": "handle"}, grounded=True, upright=False, sizes=s)


def build_shovel(s: dict[str, float]) -> ObjectModel:
    length = s["length"]
    parts = [
        Part("blade", (Box((0, 0.14, 0), (0.22, 0.28, 0.02)),), METAL),
        Part(
            "handle", (Capsule((0, 0.28, 0), (0, length, 0), 0.016), Cylinder((-0.07, length, 0), (0.07, length, 0), 0.015)), WOOD
        ),
    ]
    return ObjectModel("shovel", parts, {"handle": "handle", "grip": "handle"}, grounded=True, upright=False, sizes=s)


def _spec(name: str, sizes: dict[str, tuple[float, float, float]], build, words: tuple[str, ...], description: str) -> ObjectSpec:
    return ObjectSpec(name, sizes, build, words, description)


LIBRARY: dict[str, ObjectSpec] = {
    s.name: s
    for s in (
        _spec(
            "chair",
            {
                "seat_height": (0.46, 0.42, 0.50),
                "seat_width": (0.46, 0.42, 0.52),
                "seat_depth": (0.44, 0.40, 0.48),
                "back_height": (0.45, 0.38, 0.55),
            },
            build_chair,
            ("chair", "armchair", "dining chair", "office chair", "kitchen chair", "folding chair"),
            "a chair with a back",
        ),
        _spec(
            "stool",
            {"seat_height": (0.68, 0.60, 0.76), "seat_radius": (0.18, 0.15, 0.21)},
            build_stool,
            ("stool", "bar stool", "barstool", "high stool", "tall stool"),
            "a high stool with a footrest",
        ),
        _spec(
            "bench",
            {"seat_height": (0.45, 0.42, 0.48), "length": (1.5, 1.3, 1.8), "seat_depth": (0.42, 0.36, 0.48)},
            build_bench,
            ("bench", "park bench"),
            "a bench without a back",
        ),
        _spec(
            "sofa",
            {
                "seat_height": (0.44, 0.40, 0.48),
                "width": (2.0, 1.8, 2.2),
                "depth": (0.9, 0.85, 0.95),
                "back_height": (0.4, 0.35, 0.45),
            },
            build_sofa,
            ("sofa", "couch", "settee", "loveseat", "love seat"),
            "a sofa with arms and a back",
        ),
        _spec(
            "table",
            {"height": (0.75, 0.72, 0.78), "width": (1.4, 1.2, 1.8), "depth": (0.8, 0.7, 0.9)},
            build_table,
            ("table", "dining table", "kitchen table", "coffee table"),
            "a four-legged table",
        ),
        _spec(
            "desk",
            {"height": (0.74, 0.72, 0.76), "width": (1.3, 1.1, 1.6), "depth": (0.65, 0.6, 0.75)},
            build_desk,
            ("desk", "writing desk", "office desk", "work desk"),
            "a desk with drawers",
        ),
        _spec(
            "bed",
            {"height": (0.55, 0.50, 0.60), "length": (2.05, 2.0, 2.1), "width": (1.4, 1.2, 1.6)},
            build_bed,
            ("bed", "mattress", "double bed", "single bed"),
            "a bed with a headboard and a pillow",
        ),
        _spec(
            "box",
            {"size": (0.45, 0.32, 0.6), "height_ratio": (0.85, 0.7, 1.0)},
            build_box,
            ("box", "crate", "carton", "cardboard box", "package", "parcel", "cube"),
            "a cardboard box",
        ),
        _spec(
            "toolbox",
            {"width": (0.5, 0.42, 0.58), "height": (0.22, 0.18, 0.26)},
            build_toolbox,
            ("toolbox", "tool box", "tool kit", "toolkit", "tool case"),
            "a toolbox with a handle",
        ),
        _spec(
            "ball",
            {"radius": (0.11, 0.1, 0.33)},
            build_ball,
            (
                "ball",
                "football",
                "soccer ball",
                "basketball",
                "volleyball",
                "beach ball",
                "exercise ball",
                "baseball",
                "tennis ball",
                "gym ball",
            ),
            "a ball",
        ),
        _spec(
            "bottle",
            {"radius": (0.035, 0.032, 0.045), "height": (0.26, 0.22, 0.32)},
            build_bottle,
            ("bottle", "water bottle", "wine bottle", "soda", "flask"),
            "a bottle",
        ),
        _spec(
            "cup",
            {"radius": (0.042, 0.038, 0.048), "height": (0.1, 0.09, 0.12)},
            build_cup,
            ("cup", "mug", "coffee cup", "teacup", "tea cup", "coffee mug", "glass"),
            "a cup with a handle",
        ),
        _spec(
            "ladder",
            {"height": (2.6, 2.4, 3.0), "width": (0.42, 0.38, 0.48), "rung_spacing": (0.28, 0.26, 0.3)},
            build_ladder,
            ("ladder", "step ladder", "stepladder"),
            "a ladder (fixed upright)",
        ),
        _spec(
            "steps",
            {"rise": (0.17, 0.15, 0.19), "tread": (0.3, 0.28, 0.34), "width": (0.9, 0.8, 1.1)},
            build_steps,
            ("steps", "step", "stairs", "stair", "staircase", "stairway"),
            "three steps",
        ),
        _spec(
            "bicycle",
            {"wheel_radius": (0.34, 0.33, 0.36), "wheelbase": (1.05, 1.0, 1.1), "saddle_height": (0.86, 0.8, 0.92)},
            build_bicycle,
            ("bicycle", "bike", "cycle", "push bike", "mountain bike", "road bike"),
            "a bicycle",
        ),
        _spec(
            "skateboard",
            {"length": (0.8, 0.75, 0.85)},
            build_skateboard,
            ("skateboard", "skate board", "longboard", "board"),
            "a skateboard",
        ),
        _spec(
            "cart",
            {"length": (0.9, 0.8, 1.0), "width": (0.56, 0.5, 0.62), "handle_height": (1.0, 0.95, 1.05)},
            build_cart,
            ("cart", "shopping cart", "trolley", "shopping trolley", "wheelbarrow", "pushcart", "handcart"),
            "a shopping cart",
        ),
        _spec(
            "suitcase",
            {"height": (0.62, 0.55, 0.7), "width": (0.42, 0.38, 0.46), "handle_height": (1.0, 0.95, 1.05)},
            build_suitcase,
            ("suitcase", "luggage", "trolley bag", "rolling bag", "baggage", "travel bag"),
            "a rolling suitcase with its handle out",
        ),
        _spec(
            "pillow",
            {"width": (0.55, 0.45, 0.65), "height": (0.4, 0.35, 0.45)},
            build_pillow,
            ("pillow", "cushion", "teddy", "teddy bear", "plush", "stuffed toy"),
            "a pillow",
        ),
        _spec(
            "shelf",
            {"height": (1.85, 1.7, 2.0), "width": (0.8, 0.7, 0.9)},
            build_shelf,
            ("shelf", "bookshelf", "bookcase", "shelves", "cupboard", "cabinet"),
            "a bookshelf",
        ),
        _spec(
            "wall", {"height": (2.5, 2.4, 2.7), "width": (2.4, 2.0, 3.0)}, build_wall, ("wall", "brick wall", "fence"), "a wall"
        ),
        _spec(
            "window",
            {
                "height": (2.5, 2.4, 2.7),
                "width": (2.4, 2.2, 2.8),
                "sill_height": (0.9, 0.85, 1.0),
                "pane_height": (1.1, 1.0, 1.2),
            },
            build_window,
            ("window", "windows", "glass pane", "windowpane"),
            "a window in a wall",
        ),
        _spec(
            "door",
            {"height": (2.05, 2.0, 2.1), "width": (0.9, 0.8, 0.95)},
            build_door,
            ("door", "doorway", "gate"),
            "a door with a handle",
        ),
        _spec("broom", {"length": (1.35, 1.25, 1.45)}, build_broom, ("broom", "brush", "mop", "broomstick"), "a broom"),
        _spec("shovel", {"length": (1.15, 1.05, 1.25)}, build_shovel, ("shovel", "spade"), "a shovel"),
    )  # fmt: skip
}


def object_sizes(name: str, *, seed: int = 0, size_hint: float | None = None) -> dict[str, float]:
    """The size parameters of a library object: the defaults for seed 0, otherwise drawn within the
    realistic ranges; ``size_hint`` in [0, 1] (from "small" / "big") sets every parameter between its
    low and high end instead."""
    spec = LIBRARY[name]
    rng = np.random.default_rng(seed)
    out = {}
    for key, (default, lo, hi) in spec.sizes.items():
        if size_hint is not None:
            out[key] = lo + (hi - lo) * size_hint
        elif seed == 0:
            out[key] = default
        else:
            out[key] = float(rng.uniform(lo, hi))
    return out


def build_object(name: str, *, seed: int = 0, size_hint: float | None = None) -> ObjectModel:
    """A library object by name (see ``LIBRARY``); StudioError listing the library otherwise."""
    if name not in LIBRARY:
        raise StudioError(
            f"unknown object '{name}'; the library has {', '.join(sorted(LIBRARY))}, or give a mesh file (.glb, .gltf, .obj)"
        )
    return LIBRARY[name].build(object_sizes(name, seed=seed, size_hint=size_hint))


# --- user meshes ---------------------------------------------------------------------------------

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")
MAX_MESH_FACES = 500_000
PART_HINTS = ("auto", "top", "front", "sides", "whole")
# What a role touches on a mesh whose parts are unknown, for part hint "auto".
_ROLE_REGION = {
    "seat": "top", "lie": "top", "top": "top", "step_low": "top", "step_high": "top", "deck": "top", "lean_hands": "top", "saddle": "top",
    "surface": "front", "push": "front", "pull": "front", "wipe": "front", "grip_left": "sides", "grip_right": "sides",
}  # fmt: skip


class MeshObject(ObjectModel):
    """A user's mesh as an object: its signed distance from a grid (trilinear), its parts as surface
    samples found from a hint: "top" (the largest upward-facing level: a seat, a table top), "front"
    (faces towards +Z), "sides" (faces towards +X and -X: two parts) or "whole"."""

    GRID = 40

    def __init__(self, name: str, mesh: trimesh.Trimesh, *, part_hint: str = "auto", samples: int = 6000):
        self.name = name
        self.source_mesh = mesh
        self.grounded, self.upright, self.front, self.sizes = True, True, False, {"height": float(mesh.extents[1])}
        self.watertight = bool(mesh.is_watertight)
        self.part_hint = part_hint
        points, faces = trimesh.sample.sample_surface(mesh, samples, seed=0)
        normals = mesh.face_normals[faces]
        self._samples = torch.as_tensor(points, dtype=torch.float32)
        regions = _mesh_regions(points, normals, mesh.area_faces[faces])
        self.parts = {n: Part(n, (), solid=False) for n in regions}
        self._part_samples = {n: torch.as_tensor(points[m], dtype=torch.float32) for n, m in regions.items()}
        self.roles = {}
        for role in ("seat", "lie", "top", "step_low", "step_high", "deck", "lean_hands", "saddle", "surface", "push", "pull", "wipe",
                     "grip_left", "grip_right", "grip", "hug", "kick", "handle", "rim", "reach", "rungs", "handlebar", "left_pedal", "right_pedal"):  # fmt: skip
            region = part_hint if part_hint != "auto" else _ROLE_REGION.get(role, "whole")
            if region == "sides":
                region = "left_side" if role != "grip_right" else "right_side"
            self.roles[role] = region if region in self.parts else "whole"
        self._grid = self._sdf_grid()

    def _sdf_grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from scipy.spatial import cKDTree

        from pipelines.interfusion.geometry import inside_mesh

        lo, hi = self.source_mesh.bounds
        pad = 0.1 * (hi - lo).max() + 0.02
        lo, hi = lo - pad, hi + pad
        axes = [np.linspace(lo[k], hi[k], self.GRID) for k in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        dense, _ = trimesh.sample.sample_surface(self.source_mesh, 40_000, seed=1)
        distance, _ = cKDTree(dense).query(grid)
        if self.watertight:
            inside = inside_mesh(
                torch.as_tensor(grid), torch.as_tensor(self.source_mesh.vertices), torch.as_tensor(self.source_mesh.faces)
            ).numpy()
            sdf = np.where(inside, -distance, distance)
        else:  # an open surface: a 1 cm thick shell
            sdf = distance - 0.01
        values = torch.as_tensor(sdf.reshape(self.GRID, self.GRID, self.GRID), dtype=torch.float32)
        return values, torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        values, lo, hi = self._grid
        unit = (points - lo) / (hi - lo) * 2 - 1  # [-1, 1] over the grid
        # grid_sample takes (x, y, z) = (W, H, D) = the grid's last, middle and first axes
        sampled = torch.nn.functional.grid_sample(
            values[None, None], unit.flip(-1)[None, :, None, None], mode="bilinear", padding_mode="border", align_corners=True
        )[0, 0, :, 0, 0]
        outside = (points - points.clamp(lo, hi)).norm(dim=-1)  # beyond the grid: add the distance to it
        return sampled + outside

    def part_distance(self, part: str, points: torch.Tensor) -> torch.Tensor:
        samples = self._part_samples[part]
        return torch.cdist(points, samples).amin(1)

    def meshes(self) -> dict[str, trimesh.Trimesh]:
        mesh = self.source_mesh.copy()
        if not mesh.visual.defined:
            mesh.visual.face_colors = np.array([*WOOD, 255], dtype=np.uint8)
        return {"mesh": mesh}

    def surface_samples(self, count: int, *, seed: int = 0) -> torch.Tensor:
        points, _ = trimesh.sample.sample_surface(self.source_mesh, count, seed=seed)
        return torch.as_tensor(points, dtype=torch.float32)

    def footprint(self, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        pts = self._part_samples[part][:, [0, 2]]
        return _shrunk(pts.amin(0), pts.amax(0))

    def anchor(self, part: str) -> torch.Tensor:
        pts = self._part_samples[part]
        lo, hi = pts.amin(0), pts.amax(0)
        return torch.stack([(lo[0] + hi[0]) / 2, hi[1], (lo[2] + hi[2]) / 2])

    def bounds(self) -> np.ndarray:
        return self.source_mesh.bounds


def _mesh_regions(points: np.ndarray, normals: np.ndarray, areas: np.ndarray) -> dict[str, np.ndarray]:
    """Masks over surface samples: "whole", "top" (up-facing samples at the height holding the most
    up-facing area), "front" (+Z-facing), "left_side" / "right_side" (+X / -X-facing)."""
    out = {"whole": np.ones(len(points), dtype=bool)}
    up = normals[:, 1] > 0.7
    if up.any():
        heights = points[up, 1]
        bins = np.arange(heights.min(), heights.max() + 0.04, 0.02)
        hist, edges = np.histogram(heights, bins=bins if len(bins) > 1 else 1)
        level = edges[int(np.argmax(hist))]
        out["top"] = up & (np.abs(points[:, 1] - level - 0.01) < 0.03)
    for name, mask in (("front", normals[:, 2] > 0.7), ("left_side", normals[:, 0] > 0.7), ("right_side", normals[:, 0] < -0.7)):
        if mask.sum() >= 10:
            out[name] = mask
    return {k: v for k, v in out.items() if v.sum() >= 10 or k == "whole"}


def load_mesh_object(path: Path, *, part_hint: str = "auto", height: float = 0.0, up: str = "y") -> MeshObject:
    """A mesh file as an object: turned so ``up`` is Y, scaled to ``height`` metres (0: the file's
    units), centred on x = z = 0 and standing on y = 0. One StudioError for an unreadable, empty,
    huge or implausibly sized mesh."""
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise StudioError(f"{path}: an object mesh must be {', '.join(MESH_SUFFIXES)}")
    if not path.is_file():
        raise StudioError(f"{path}: no such file")
    try:
        loaded = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many kinds for a corrupt or foreign file
        raise StudioError(
            f"{path}: not a readable mesh ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else 'no details'})"
        ) from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise StudioError(f"{path}: holds no triangles")
    if len(loaded.faces) > MAX_MESH_FACES:
        raise StudioError(f"{path}: {len(loaded.faces)} triangles; objects take up to {MAX_MESH_FACES}")
    if not np.isfinite(loaded.vertices).all():
        raise StudioError(f"{path}: has vertices that are not finite numbers")
    mesh = loaded.copy()
    if up == "z":
        mesh.apply_transform(trimesh.transformations.rotation_matrix(-math.pi / 2, [1, 0, 0]))
    extent = float(mesh.extents[1])
    if extent <= 0:
        raise StudioError(f"{path}: the mesh is flat (no height)")
    if height > 0:
        mesh.apply_scale(height / extent)
    elif not 0.02 <= extent <= 5.0:
        raise StudioError(
            f"{path}: the mesh is {extent:g} units tall; if its units are not metres, give its height (--set object_height=0.45)"
        )
    lo, hi = mesh.bounds
    mesh.apply_translation([-(lo[0] + hi[0]) / 2, -lo[1], -(lo[2] + hi[2]) / 2])
    return MeshObject(path.stem, mesh, part_hint=part_hint)


__all__ = [
    "LIBRARY",
    "MESH_SUFFIXES",
    "PART_HINTS",
    "MeshObject",
    "ObjectModel",
    "ObjectSpec",
    "Part",
    "build_object",
    "load_mesh_object",
    "object_sizes",
]
