"""Placing the object and posing the body together: contact, penetration both ways, joint limits,
ground contact, static balance, and a prior that stays near the retrieved pose.

Two stages:
1. rigid: for each retrieved pose and each of four turns of the object about the vertical, the
   object's placement and scale and the body's translation are fitted with the body held still
   (cheap: no body-model pass); the best (pose, turn) by its loss goes on;
2. joint: the body's pose, orientation and translation and the object's placement and scale are
   optimised together.

The differentiable stand-ins used here (the object's signed distance at body vertices; the signed
distance of object points to the body taken at the nearest body vertex along its normal) are judged
by the exact measures of ``geometry`` afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import roma
import torch

from pipelines.interfusion.geometry import mesh_centroid, support_distance
from pipelines.interfusion.interactions import Variant
from pipelines.interfusion.objects import ObjectModel
from studio.body.joints import JOINT_INDEX
from studio.fit.prior import limit_penalty
from studio.render import vertex_normals


@dataclasses.dataclass(frozen=True)
class Weights:
    """Loss weights (distances in metres, angles in radians)."""

    contact: float = 1e4
    optional_contact: float = 2e3
    support: float = 1e4
    facing: float = 30.0
    penetration: float = 1e4
    ground: float = 1e4
    balance: float = 3e3
    prior: float = 5.0
    limits: float = 100.0
    scale: float = 10.0


@dataclasses.dataclass
class Problem:
    """Everything the losses need about one scene."""

    body_model: object
    obj: ObjectModel
    variant: Variant
    holds: bool  # the object is held (free in the air); otherwise it stands on the ground
    contacts: list[tuple[str, str]]  # (body region, object part)
    optional: list[tuple[str, str]]  # weaker contacts, not counted in the figures
    support: list[int]  # the contacts whose region rests on top of their part
    regions: dict[str, torch.Tensor]  # region -> vertex indices
    samples: torch.Tensor  # [M, 3] points on the object's surface (object frame)
    hands: dict[str, torch.Tensor]  # left_hand_pose / right_hand_pose [1, 45]
    shape: dict[str, torch.Tensor]  # the body's shape fields [1, D]
    max_scale: float = 0.1  # the object's scale stays within exp(+-max_scale)
    weights: Weights = dataclasses.field(default_factory=Weights)
    incidence: torch.Tensor | None = None  # the body's vertex-face matrix, for normals

    def normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """Unit normals [V, 3] of posed body vertices [V, 3] (no gradient)."""
        from studio.render import vertex_face_matrix

        faces = self.body_model.faces.long()
        if self.incidence is None:
            self.incidence = vertex_face_matrix(faces, vertices.shape[0])
        with torch.no_grad():
            return vertex_normals(vertices.detach()[None], faces, self.incidence)[0]


@dataclasses.dataclass
class State:
    """The variables: the body's pose and translation, the object's placement and log-scale."""

    global_orient: torch.Tensor  # [3]
    body_pose: torch.Tensor  # [63]
    transl: torch.Tensor  # [3]
    obj_rotation: torch.Tensor  # [3] axis-angle (upright objects: only its Y component is used)
    obj_position: torch.Tensor  # [3]
    obj_scale: torch.Tensor  # [1] unbounded; the scale is exp(max_scale * tanh(.))

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def clone(self) -> State:
        return State(*(t.detach().clone() for t in self.tensors()))


def object_pose(problem: Problem, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The object's rotation [3, 3], position [3] and scale (scalar) in the world."""
    rot = state.obj_rotation
    if problem.obj.upright:
        rot = rot * torch.tensor([0.0, 1.0, 0.0])
    return roma.rotvec_to_rotmat(rot), state.obj_position, torch.exp(problem.max_scale * torch.tanh(state.obj_scale[0]))


def to_object(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """World points [N, 3] in the object's frame."""
    return (points - t) @ R / s


def to_world(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Object-frame points [N, 3] in the world."""
    return s * points @ R.T + t


def body_params(problem: Problem, state: State) -> dict[str, torch.Tensor]:
    """The body model's parameters (each [1, D]) for a state."""
    return {
        "global_orient": state.global_orient[None], "body_pose": state.body_pose[None], "transl": state.transl[None],
        **problem.hands, **problem.shape,
    }  # fmt: skip


def object_world_sdf(problem: Problem, state: State) -> Callable[[torch.Tensor], torch.Tensor]:
    """World points [N, 3] -> the placed object's signed distance [N] (metres)."""
    R, t, s = object_pose(problem, state)
    return lambda points: s * problem.obj.sdf(to_object(points, R, t, s))


def contact_distances(
    problem: Problem, state: State, vertices: torch.Tensor, contacts: list[tuple[str, str]] | None = None
) -> torch.Tensor:
    """The smallest distance of each contact's body region to its object part: [C] metres."""
    R, t, s = object_pose(problem, state)
    out = []
    for region, part in problem.contacts if contacts is None else contacts:
        local = to_object(vertices[problem.regions[region]], R, t, s)
        out.append(s * problem.obj.part_distance(part, local).min())
    return torch.stack(out)


def nearest_vertices(points: torch.Tensor, vertices: torch.Tensor, *, within: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest of vertices [V, 3] to each of points [N, 3] (a k-d tree; no gradient): indices [N]
    and whether one lies within ``within`` metres [N] bool."""
    from scipy.spatial import cKDTree

    distance, index = cKDTree(vertices.cpu().numpy()).query(points.cpu().numpy(), distance_upper_bound=within)
    found = torch.from_numpy(np.isfinite(distance))
    return torch.from_numpy(np.where(np.isfinite(distance), index, 0)).long(), found


def _near(points: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, margin: float) -> torch.Tensor:
    return ((points >= lo - margin) & (points <= hi + margin)).all(-1)


def losses(
    problem: Problem,
    state: State,
    vertices: torch.Tensor,
    joints: torch.Tensor,
    *,
    normals: torch.Tensor | None = None,
    inside: torch.Tensor | None = None,
    posed: bool = True,
) -> dict[str, torch.Tensor]:
    """Every loss term of a state, given the body's posed vertices [V, 3] and joints [J, 3] (world),
    for the object-in-body term the vertices' unit normals [V, 3] and optionally which object
    samples lie inside the body ([M] bool, ``inside_samples``). ``posed``: the pose terms apply (stage 2)."""
    w = problem.weights
    R, t, s = object_pose(problem, state)
    zero = vertices.new_zeros(())
    terms: dict[str, torch.Tensor] = {}
    terms["contact"] = w.contact * contact_distances(problem, state, vertices).square().sum()
    if problem.optional:
        terms["contact"] = (
            terms["contact"] + w.optional_contact * contact_distances(problem, state, vertices, problem.optional).square().sum()
        )
    # a supported region's centre lies over its part (not beside its edge)
    support = zero
    for k in problem.support:
        region, part = problem.contacts[k]
        centre = to_object(vertices[problem.regions[region]].mean(0, keepdim=True), R, t, s)[0, [0, 2]]
        lo, hi = problem.obj.footprint(part)
        support = support + ((lo - centre).clamp_min(0) + (centre - hi).clamp_min(0)).square().sum()
    terms["support"] = w.support * support
    # an object with a front: the body faces the same way or toward it, and stays in front
    terms["facing"] = zero
    if problem.obj.front and (problem.variant.facing != "any" or problem.variant.in_front):
        left = joints[JOINT_INDEX["left_hip"]] - joints[JOINT_INDEX["right_hip"]]
        forward = torch.stack([-left[2], left[0]])
        forward = forward / forward.norm().clamp_min(1e-6)
        obj_forward = R[[0, 2], 2]
        obj_forward = obj_forward / obj_forward.norm().clamp_min(1e-6)
        alignment = (forward * obj_forward).sum()
        if problem.variant.facing == "same":
            terms["facing"] = w.facing * (1 - alignment)
        elif problem.variant.facing == "toward":
            terms["facing"] = w.facing * (1 + alignment)
        if problem.variant.in_front:
            pelvis = to_object(joints[:1], R, t, s)[0]
            terms["facing"] = terms["facing"] + w.support * (0.05 - pelvis[2]).clamp_min(0).square()
    # body vertices inside the object (only those near its bounding box are tested)
    obj_points = to_world(problem.samples, R, t, s)
    lo, hi = obj_points.detach().amin(0), obj_points.detach().amax(0)
    near = _near(vertices.detach(), lo, hi, 0.05)
    body_in = zero
    if near.any():
        sdf = s * problem.obj.sdf(to_object(vertices[near], R, t, s))
        body_in = (-sdf).clamp_min(0).square().sum()
    # object points inside the body: signed distance at the nearest body vertex, along its normal;
    # with ``inside`` (the exact test, refreshed every few steps) a point inside whose nearest normal
    # says otherwise is pulled to that vertex
    obj_in = zero
    if normals is not None:
        nearest, found = nearest_vertices(obj_points.detach(), vertices.detach(), within=0.1)
        if found.any():
            offset = obj_points[found] - vertices[nearest[found]]
            sd = (offset * normals[nearest[found]]).sum(-1)
            depth = (-sd).clamp_min(0).square()
            if inside is not None:
                depth = torch.where(inside[found] & (sd >= 0), offset.square().sum(-1), depth * inside[found])
            obj_in = depth.sum()
    terms["penetration"] = w.penetration * (body_in + obj_in)
    # the ground: nothing below it; the feet that stand on it touch it; a standing object rests on it
    ground = (-vertices[:, 1]).clamp_min(0).square().sum() + (-obj_points[:, 1]).clamp_min(0).square().sum()
    for region in problem.variant.feet_on_ground:
        ground = ground + vertices[problem.regions[region], 1].min().square()
    if not problem.holds:
        ground = ground + obj_points[:, 1].min().square()
    terms["ground"] = w.ground * ground
    if posed:
        terms["balance"] = w.balance * balance_offset(problem, state, vertices).square() if problem.variant.balance else zero
        rotvecs = state.body_pose.reshape(1, 21, 3)
        terms["limits"] = w.limits * limit_penalty(rotvecs, slice(1, 22)).sum()
    terms["scale"] = w.scale * (problem.max_scale * torch.tanh(state.obj_scale)).square().sum()
    return terms


def inside_samples(
    problem: Problem, state: State, vertices: torch.Tensor | None = None, *, index=None, shift: torch.Tensor | None = None
) -> torch.Tensor:
    """Which of the object's samples lie inside the body, exactly: [M] bool. The body is ``vertices``
    [V, 3], or a prebuilt ``geometry.RayIndex`` of it moved by ``shift`` [3]."""
    from pipelines.interfusion.geometry import RayIndex

    with torch.no_grad():
        R, t, s = object_pose(problem, state)
        index = index if index is not None else RayIndex(vertices, problem.body_model.faces)
        return index.contains(
            to_world(problem.samples, R, t, s), shift=None if shift is None else shift.detach().cpu().double().numpy()
        )


def support_points(problem: Problem, vertices: torch.Tensor) -> torch.Tensor:
    """Ground-plane points (x, z) [K, 2] of the soles that bear weight: on the ground or on the object."""
    soles = set(problem.variant.feet_on_ground) | {r for r, _ in problem.contacts if r.endswith("_sole")}
    if not soles:
        soles = {"left_sole", "right_sole"}
    idx = torch.cat([problem.regions[r] for r in sorted(soles)])
    return vertices[idx][:, [0, 2]]


def balance_offset(problem: Problem, state: State, vertices: torch.Tensor) -> torch.Tensor:
    """How far the body's centre of mass lies, on the ground plane, outside its support: metres."""
    com = mesh_centroid(vertices, problem.body_model.faces.to(vertices.device))
    return support_distance(com[[0, 2]], support_points(problem, vertices))


def posed_body(problem: Problem, state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """The body of a state: vertices [V, 3] and joints [J, 3] (world)."""
    out = problem.body_model(body_params(problem, state))
    return out.vertices[0], out.joints[0]


def fit_rigid(
    problem: Problem, state: State, body_vertices: torch.Tensor, body_joints: torch.Tensor, *, steps: int
) -> tuple[State, float]:
    """Stage 1: the object's placement and scale and the body's translation, the body held still.

    Args:
        body_vertices: [V, 3] and body_joints [J, 3]: the body posed by ``state`` (world).
    Returns:
        the fitted state and its final loss.
    """
    state = state.clone()
    base = body_vertices.detach() - state.transl
    base_joints = body_joints.detach() - state.transl
    normals = problem.normals(body_vertices)
    params = [state.transl, state.obj_rotation, state.obj_position, state.obj_scale]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(
        [
            {"params": [state.transl, state.obj_position], "lr": 0.01},
            {"params": [state.obj_rotation, state.obj_scale], "lr": 0.03},
        ]
    )
    from pipelines.interfusion.geometry import RayIndex

    index = RayIndex(base, problem.body_model.faces)  # the body only moves: index it once
    total = torch.zeros(())
    inside = None
    for step in range(steps):
        optimizer.zero_grad()
        if step % 5 == 0:
            inside = inside_samples(problem, state, index=index, shift=state.transl)
        total = sum(
            losses(
                problem, state, base + state.transl, base_joints + state.transl, normals=normals, inside=inside, posed=False
            ).values()
        )
        total.backward()
        optimizer.step()
    with torch.no_grad():
        inside = inside_samples(problem, state, index=index, shift=state.transl)
        total = sum(
            losses(
                problem, state, base + state.transl, base_joints + state.transl, normals=normals, inside=inside, posed=False
            ).values()
        )
    return state.clone(), float(total)


def fit_joint(
    problem: Problem, state: State, *, steps: int, on_step: Callable[[int], None] | None = None
) -> tuple[State, list[float]]:
    """Stage 2: body pose, orientation and translation with the object's placement and scale.

    Returns:
        the fitted state and the total loss at every step.
    """
    state = state.clone()
    start_pose, start_orient = state.body_pose.clone(), state.global_orient.clone()
    for p in state.tensors():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(
        [
            {"params": [state.body_pose, state.global_orient], "lr": 0.01},
            {"params": [state.transl, state.obj_position], "lr": 0.005},
            {"params": [state.obj_rotation, state.obj_scale], "lr": 0.02},
        ]
    )
    history = []
    w = problem.weights
    normals = inside = None
    for step in range(steps):
        optimizer.zero_grad()
        vertices, joints = posed_body(problem, state)
        if step % 5 == 0:  # these change slowly; they only steer the object-in-body term
            normals = problem.normals(vertices)
            inside = inside_samples(problem, state, vertices)
        terms = losses(problem, state, vertices, joints, normals=normals, inside=inside)
        terms["prior"] = w.prior * (
            (state.body_pose - start_pose).square().sum() + (state.global_orient - start_orient).square().sum()
        )
        total = sum(terms.values())
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
        if on_step is not None:
            on_step(step + 1)
    return state.clone(), history


def initial_state(
    problem: Problem, global_orient: torch.Tensor, body_pose: torch.Tensor, yaw: float
) -> tuple[State, torch.Tensor]:
    """A body in the retrieved pose facing +Z with its lowest point on the ground, and the object
    turned by ``yaw`` and placed so that its contact parts meet the body's contact regions.

    Returns:
        the state and the body's posed vertices [V, 3] and joints [J, 3].
    """
    orient = face_forward(problem.body_model, global_orient, body_pose, problem)
    state = State(orient, body_pose.clone(), torch.zeros(3), torch.tensor([0.0, yaw, 0.0]), torch.zeros(3), torch.zeros(1))
    with torch.no_grad():
        vertices, joints = posed_body(problem, state)
        state.transl = torch.tensor([0.0, -float(vertices[:, 1].min()), 0.0])
        vertices, joints = vertices + state.transl, joints + state.transl
        R, _, s = object_pose(problem, state)
        region_centre = torch.stack([vertices[problem.regions[r]].mean(0) for r, _ in problem.contacts]).mean(0)
        anchor = torch.stack([to_world(problem.obj.anchor(p)[None], R, torch.zeros(3), s)[0] for _, p in problem.contacts]).mean(
            0
        )
        state.obj_position = region_centre - anchor
        if not problem.holds:  # a standing object rests on the floor; the body comes to it
            lift = float(state.obj_position[1])
            state.obj_position[1] = 0.0
            if not problem.variant.feet_on_ground:
                state.transl[1] -= lift
                vertices[:, 1] -= lift
                joints[:, 1] -= lift
    return state, vertices, joints


def face_forward(body_model, global_orient: torch.Tensor, body_pose: torch.Tensor, problem: Problem) -> torch.Tensor:
    """``global_orient`` turned about the vertical so that the body's hips face +Z."""
    with torch.no_grad():
        joints = body_model.joints({"global_orient": global_orient[None], "body_pose": body_pose[None], **problem.shape})[0]
    left = joints[JOINT_INDEX["left_hip"]] - joints[JOINT_INDEX["right_hip"]]
    heading = math.atan2(-float(left[2]), float(left[0]))  # the hip axis' turn away from +X
    turn = roma.rotvec_to_rotmat(torch.tensor([0.0, -heading, 0.0]))
    return roma.rotmat_to_rotvec(turn @ roma.rotvec_to_rotmat(global_orient))


__all__ = [
    "Problem", "State", "Weights", "balance_offset", "body_params", "contact_distances", "face_forward", "fit_joint", "fit_rigid",
    "initial_state", "inside_samples", "losses", "nearest_vertices", "object_pose", "object_world_sdf", "posed_body", "to_object", "to_world",
]  # fmt: skip
