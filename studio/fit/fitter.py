"""Keypoints -> body parameters and a camera.

The camera is a static pinhole at the world origin looking down -Z (world -> camera flips Y and Z),
with the default focal length of ``studio.condition.default_focal_length`` unless one is given.
The body carries all the motion: per-frame global orientation, joint rotations and translation,
with one shape for the whole video.

Each frame is first initialised in closed form: the torso's orientation from the estimator's metric
3D landmarks, limbs by two-bone inverse kinematics that respects the knee and elbow hinges, and the
translation by linear least squares on the 2D keypoints. Adam then refines the frames of a chunk
together, minimising
- a robust (Geman-McClure) 2D reprojection error weighted by keypoint confidence (keypoints outside
  the image have confidence 0 and pull on nothing),
- the distance of root-relative joints to the estimator's metric 3D landmarks, weighted per limb by
  how far those landmarks can be trusted (``studio.fit.evidence.world_weights``),
- ordinal depth from 2D occlusion cues (``studio.fit.evidence.depth_order``): a hidden joint behind
  the joint or torso that hides it, a seen joint over the torso in front of it,
- the pose prior learned from CMU motion capture (``studio.fit.prior.PosePrior``), the joint-limit
  prior and a small pull towards the rest pose,
- for an image with a person mask, the silhouette term of ``studio.fit.silhouette`` over the last
  ``silhouette_iterations`` steps (it needs every vertex, which costs more than joints),
- joint acceleration across frames (including the previous chunk's last frames),
- a pull of the shape towards the body model's average.
Videos are fitted chunk by chunk (bounded memory, streaming), each chunk warm-started and joined
smoothly to the one before; the shape is fitted on the first chunk and then held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import roma
import torch

from studio.body.base import BodyModel, rotation_between
from studio.body.joints import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS
from studio.condition import Camera, HumanCondition, default_focal_length
from studio.fit.evidence import SEGMENTS, depth_order, world_weights
from studio.fit.prior import joint_limits, limit_penalty, load_pose_prior
from studio.fit.silhouette import SilhouetteTerm
from studio.pose.keypoints import Keypoints

logger = logging.getLogger(__name__)

# world (Y up, Z towards the camera) <-> OpenCV camera axes (Y down, Z forward): flip Y and Z.
_FLIP = torch.tensor([1.0, -1.0, -1.0])


@dataclasses.dataclass
class FitConfig:
    """Settings of the body fit."""

    focal_length: float | None = None
    """Focal length in pixels of the full-size image; None: the image's longer side (the capture job
    estimates one first, see ``focal_search``)."""
    focal_search: bool = True
    """Without a focal length, let the capture job estimate one (EXIF, else ``studio.fit.focal``);
    False: the image's longer side."""
    iterations: int = 30
    """Adam steps per chunk of video frames."""
    image_iterations: int = 120
    """Adam steps for a single image (the shape is fitted too)."""
    shape_iterations: int = 20
    """Adam steps of a video's shape fit (on its best-detected frames of the first chunk)."""
    image_shape_iterations: int = 60
    """The last Adam steps of an image fit, which fit the shape too (before them the shape is held,
    which makes a step several times cheaper)."""
    chunk_size: int = 16
    """Video frames fitted together."""
    learning_rate: float = 0.03
    """Adam step size (optimizer "adam")."""
    optimizer: str = "adam"
    """"adam" (fixed cost per step, the default) or "lbfgs" (L-BFGS with a strong-Wolfe line search; ``iterations`` caps its steps; a little smoother, about 20% slower)."""
    hands: bool = True
    """Fit finger rotations where hand keypoints were found."""
    robust_scale: float = 0.05
    """Geman-McClure scale of the 2D error, as a fraction of the person's size in the image."""
    world_weight: float = 4.0
    """Weight of the alignment to the estimator's metric 3D landmarks."""
    prior_weight: float = 1.0
    """Weight of the joint-limit prior (the pull to the rest pose is a hundredth of it)."""
    smooth_weight: float = 0.001
    """Weight of the joint-acceleration penalty between frames (video only)."""
    shape_weight: float = 0.05
    """Pull of the shape towards the body model's average."""
    max_gap_seconds: float = 0.5
    """Frames without a person in gaps up to this long are interpolated; longer gaps hold the pose."""
    pose_prior_weight: float = 0.1
    """Weight of the mocap-learned pose prior (0: off)."""
    pose_prior: str | None = None
    """A pose-prior file from scripts/build_pose_prior.py; None: the one shipped in assets/prior/."""
    ordinal_weight: float = 20.0
    """Weight of the ordinal depth cues from occlusion (0: off)."""
    world_tolerance: float = 0.12
    """Image-plane disagreement (metres) between a metric landmark and its 2D keypoint at which the
    landmark keeps e^-1 of its weight."""
    outside_weight: float = 0.5
    """Weight of keeping joints the estimator placed beyond the frame's edge out of the frame (they
    have no 2D weight, so without this a cut-off limb may swing into view)."""
    silhouette_weight: float = 0.5
    """Weight of the silhouette term against the person mask, for images with a mask (0: off)."""
    silhouette_iterations: int = 40
    """Final Adam steps of an image fit that use the silhouette term."""
    smoothing: bool = True
    """Smooth a video's fitted parameters over time with a bidirectional (RTS) pass (the capture job)."""


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: fitting's tensors are small, so one thread is
    faster (several threads spin against each other, badly so on a busy machine), and the other core
    stays free for work that overlaps it (tracking, inpainting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# 2D keypoint weights by joint: the estimator's hips, face and body-level hand points sit less
# precisely on the body model's joints than limbs do.
def _joint_weights() -> torch.Tensor:
    w = torch.ones(NUM_JOINTS)
    for name in ("left_hip", "right_hip"):
        w[JOINT_INDEX[name]] = 0.7
    for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        w[JOINT_INDEX[name]] = 0.5
    for i, name in enumerate(JOINT_NAMES):
        if any(f in name for f in ("thumb", "index", "middle", "ring", "pinky")):
            w[i] = 0.4
    return w


_TORSO = [JOINT_INDEX[n] for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")]
SILHOUETTE_STRIDE = 4  # the silhouette term looks at every 4th vertex (body models number vertices region by region)


class BodyFitter:
    """Fits a body model to keypoints. Use ``fit`` (image or whole video) or ``fit_chunk`` (streaming)."""

    def __init__(self, body_model: BodyModel, config: FitConfig | None = None) -> None:
        self.model = body_model
        self.config = config or FitConfig()
        self.weights = _joint_weights()
        self.shape_field = body_model.shape_field or next(iter(body_model.shape_dims))
        self.shape: torch.Tensor | None = None  # [1, D] once fitted
        self._previous: torch.Tensor | None = None  # [<=2, J, 3] camera-space joints of the last fitted frames
        self._last: dict[str, torch.Tensor] | None = None  # the last fitted frame's parameters
        with torch.no_grad():
            self._rest = body_model.joints({"transl": torch.zeros(1, 3)})[0]  # [J, 3] T-pose joints, average shape
        self._bones = np.array([float((self._rest[JOINT_INDEX[c]] - self._rest[JOINT_INDEX[p]]).norm()) for p, c in SEGMENTS])

    # -- public API -------------------------------------------------------------------------------
    def fit(self, keypoints: Keypoints) -> HumanCondition:
        """Fit all frames (T=1: an image, with its shape); returns a HumanCondition of T frames."""
        size = self.config.chunk_size
        return HumanCondition.concat([self.fit_chunk(keypoints[i : i + size]) for i in range(0, len(keypoints), size)])

    def fit_chunk(self, keypoints: Keypoints) -> HumanCondition:
        """Fit the next frames of a video (streaming): continues smoothly from the previous call,
        with the shape fitted on the first call and then held. Runs torch on one thread."""
        with one_torch_thread():
            return self._fit_next(keypoints)

    def _fit_next(self, keypoints: Keypoints) -> HumanCondition:
        if len(keypoints) == 1 and self._previous is None:  # an image: shape and pose together
            cond, joints = self._fit_chunk(keypoints, None, fit_shape=self.shape is None, iterations=self.config.image_iterations)
            self._previous = joints
            return cond
        if self.shape is None:
            self._fit_shape(keypoints)
        cond, joints = self._fit_chunk(keypoints, self._previous, fit_shape=False, iterations=self.config.iterations)
        self._previous = joints[-2:]
        self._last = {k: v[-1:] for k, v in cond.body.items()}
        return cond

    def _fit_shape(self, keypoints: Keypoints, *, max_frames: int = 4) -> None:
        """The video's one shape, from its best-detected frames fitted as still images (without the
        smoothness term, which would favour a smaller body)."""
        score = keypoints.confidence.mean(axis=1)
        best = sorted(int(i) for i in score.argsort()[::-1][:max_frames])
        self._fit_chunk(keypoints.select(best), None, fit_shape=True, iterations=self.config.shape_iterations, smooth=False)

    # -- one chunk --------------------------------------------------------------------------------
    def camera(self, image_size: tuple[int, int], num_frames: int) -> Camera:
        """The static fitting camera for an image of ``image_size``."""
        h, w = image_size
        f = self.config.focal_length or default_focal_length(image_size)
        K = torch.tensor([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
        E = torch.diag(torch.cat([_FLIP, torch.ones(1)]))
        return Camera(K=K.expand(num_frames, 3, 3).clone(), extrinsics=E.expand(num_frames, 4, 4).clone(), image_size=(h, w))

    def _fit_chunk(self, kp: Keypoints, previous: torch.Tensor | None, *, fit_shape: bool, iterations: int, smooth: bool = True):
        cfg = self.config
        T = len(kp)
        model = self.model
        camera = self.camera(kp.image_size, T)
        K = camera.K[0]
        scale = _person_size(kp)  # 2D errors are measured against the person's size, not the frame's
        points = torch.from_numpy(kp.points).float()
        known = self.model.joint_valid.float().cpu()  # joints the model lacks (SMPL's fingers) pull on nothing
        conf = torch.from_numpy(kp.confidence).float() * self.weights * known
        world_obs = torch.from_numpy(kp.world).float() * _FLIP  # world axes, hip-centred
        world_conf = torch.from_numpy(kp.world_confidence).float() * known
        world_trust = torch.from_numpy(world_weights(kp, tolerance=cfg.world_tolerance, bone_lengths=self._bones)).float() * known
        beyond = torch.from_numpy(_beyond_frame(kp)).float() * known  # [T, J]: placed beyond the frame's edge
        frame_hw = torch.tensor(kp.image_size, dtype=torch.float32)

        shape = self.shape if self.shape is not None else model.default_shape()[self.shape_field]
        with torch.no_grad():
            init = self._initialise(kp, world_obs, world_conf, points, conf, K, shape)
        go = init["global_orient"].clone().requires_grad_()
        bp = init["body_pose"].clone().requires_grad_()
        tr = init["transl"].clone().requires_grad_()
        variables = [go, bp, tr]
        use_hands = cfg.hands and bool((kp.confidence[:, [JOINT_INDEX["left_middle2"], JOINT_INDEX["right_middle2"]]] > 0.5).any())
        lh = torch.zeros(T, 45, requires_grad=use_hands)
        rh = torch.zeros(T, 45, requires_grad=use_hands)
        if use_hands:
            variables += [lh, rh]
        shape_var = shape.clone().requires_grad_(fit_shape)
        if fit_shape:
            variables.append(shape_var)
        shape_mean = model.default_shape()[self.shape_field]
        optimizer = torch.optim.Adam(variables, lr=cfg.learning_rate)
        sigma2 = cfg.robust_scale**2
        prev = previous if previous is not None else torch.zeros(0, NUM_JOINTS, 3)
        has_world = world_conf.sum() > 0
        wc = world_conf[:, _TORSO].sum(1, keepdim=True).clamp_min(1e-6)
        prior = load_pose_prior(cfg.pose_prior) if cfg.pose_prior_weight > 0 else None
        order = depth_order(kp) if cfg.ordinal_weight > 0 else None
        silhouette = None
        if T == 1 and kp.mask is not None and cfg.silhouette_weight > 0 and cfg.silhouette_iterations > 0:
            silhouette = SilhouetteTerm(kp.mask[0])

        def objective(with_silhouette: bool = False):
            params = {"global_orient": go, "body_pose": bp, "transl": tr, "left_hand_pose": lh, "right_hand_pose": rh}
            params[self.shape_field] = self._clamp_shape(shape_var)
            if with_silhouette:
                out = model(params)
                joints = out.joints * _FLIP  # [T, J, 3] camera space
                vertices = out.vertices[:, ::SILHOUETTE_STRIDE] * _FLIP  # a spread subset is enough
            else:
                joints = model.joints(params) * _FLIP  # [T, J, 3] camera space
            uv = _project(joints, K)
            r2 = ((uv - points) / scale).square().sum(-1)
            loss = (conf * (sigma2 * r2 / (sigma2 + r2))).sum() / (sigma2 * T)
            if cfg.outside_weight > 0 and bool(beyond.any()):
                depth_in = torch.minimum(uv, frame_hw.flip(0) - uv).amin(-1)  # [T, J] pixels inside the frame (< 0: outside)
                inside = torch.sqrt((torch.relu(depth_in) / scale).square() + 1e-8) - 1e-4  # L1: pulls all the way out
                loss = loss + cfg.outside_weight * (beyond * inside).sum() / (cfg.robust_scale * T)
            if has_world:
                centre = (joints[:, _TORSO] * world_conf[:, _TORSO, None]).sum(1, keepdim=True) / wc[..., None]
                obs_centre = (world_obs[:, _TORSO] * _FLIP * world_conf[:, _TORSO, None]).sum(1, keepdim=True) / wc[..., None]
                d = (joints - centre) - (world_obs * _FLIP - obs_centre)
                loss = loss + cfg.world_weight * (world_trust * d.square().sum(-1)).sum() / (0.01 * T)
            pose = torch.cat([bp.view(T, 21, 3), lh.view(T, 15, 3), rh.view(T, 15, 3)], dim=1)
            loss = loss + cfg.prior_weight * (
                limit_penalty(bp.view(T, 21, 3), slice(1, 22)).sum() * 100.0
                + limit_penalty(torch.cat([lh, rh], 1).view(T, 30, 3), slice(25, 55)).sum() * 10.0
                + 0.01 * pose.square().sum()
            ) / T
            if prior is not None:
                loss = loss + cfg.pose_prior_weight * prior.penalty(bp).sum() / T
            if order is not None and len(order):
                loss = loss + cfg.ordinal_weight * order.penalty(joints).sum() / T
            if with_silhouette:
                loss = loss + cfg.silhouette_weight * silhouette(_project(vertices, K)).sum() / T
            if smooth and T + len(prev) >= 3:
                seq = torch.cat([prev, joints], dim=0)
                accel = seq[2:] - 2 * seq[1:-1] + seq[:-2]
                loss = loss + cfg.smooth_weight * accel.square().sum() / (1e-4 * T)
            if fit_shape:
                loss = loss + cfg.shape_weight * (shape_var - shape_mean).square().sum() * 100.0
            return loss, joints

        if cfg.optimizer == "lbfgs" and iterations > 0:
            optimizer = torch.optim.LBFGS(variables, lr=1.0, max_iter=iterations, history_size=10, line_search_fn="strong_wolfe")

            def closure():
                optimizer.zero_grad(set_to_none=True)
                loss, _ = objective(silhouette is not None)
                loss.backward()
                return loss

            optimizer.step(closure)
        else:
            first_silhouette_step = iterations - cfg.silhouette_iterations if silhouette is not None else iterations
            first_shape_step = iterations - cfg.image_shape_iterations if fit_shape and T == 1 else 0
            for step in range(iterations):
                if fit_shape:
                    shape_var.requires_grad_(step >= first_shape_step)
                optimizer.zero_grad(set_to_none=True)
                loss, _ = objective(step >= first_silhouette_step)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            _, joints = objective()
            final_shape = self._clamp_shape(shape_var).detach()
        if fit_shape:
            self.shape = final_shape
        body = {
            "global_orient": go.detach(),
            "body_pose": bp.detach(),
            "left_hand_pose": lh.detach(),
            "right_hand_pose": rh.detach(),
            "transl": tr.detach(),
            self.shape_field: final_shape.expand(T, -1).clone(),
        }
        for field, dim in model.shape_dims.items():
            if field not in body:
                body[field] = model.default_shape()[field].expand(T, dim).clone()
        return HumanCondition(body_model=model.name, body=body, camera=camera, fps=kp.fps), joints

    def _clamp_shape(self, shape: torch.Tensor) -> torch.Tensor:
        bounds = self.model.shape_bounds
        return shape if bounds is None else shape.clamp(*bounds)

    # -- closed-form initialisation ---------------------------------------------------------------
    def _initialise(self, kp, world_obs, world_conf, points, conf, K, shape) -> dict[str, torch.Tensor]:
        """Per-frame pose by inverse kinematics on the metric 3D landmarks, then the translation by
        linear least squares on the 2D keypoints."""
        T = len(kp)
        rest = self._rest
        local = torch.eye(3).repeat(T, 55, 1, 1)
        ok = lambda *names: torch.stack([world_conf[:, JOINT_INDEX[n]] > 0.3 for n in names]).all(0)
        P = lambda n: world_obs[:, JOINT_INDEX[n]]
        R = lambda n: rest[JOINT_INDEX[n]].expand(T, 3)

        # Torso orientation from the hips and shoulders.
        across = P("left_hip") - P("right_hip") + P("left_shoulder") - P("right_shoulder")
        up = P("left_shoulder") + P("right_shoulder") - P("left_hip") - P("right_hip")
        across_r = R("left_hip") - R("right_hip") + R("left_shoulder") - R("right_shoulder")
        up_r = R("left_shoulder") + R("right_shoulder") - R("left_hip") - R("right_hip")
        g = _frame(across, up) @ _frame(across_r, up_r).transpose(-1, -2)
        good = ok("left_hip", "right_hip", "left_shoulder", "right_shoulder")
        # Facing away from the camera is the default guess without 3D landmarks.
        local[:, 0] = torch.where(good[:, None, None], g, torch.eye(3))
        solved = torch.zeros(T, 55, dtype=torch.bool)  # which joints the IK solved in which frames
        solved[:, 0] = good
        glob = local[:, 0]

        for side in ("left", "right"):
            for root, mid, end, bend in (("hip", "knee", "ankle", (0.0, 0.0, -1.0)), ("shoulder", "elbow", "wrist", (0.0, 0.0, 1.0))):
                names = [f"{side}_{root}", f"{side}_{mid}", f"{side}_{end}"]
                a_o, f_o = P(names[1]) - P(names[0]), P(names[2]) - P(names[1])
                a_r, f_r = R(names[1]) - R(names[0]), R(names[2]) - R(names[1])
                n_r = torch.linalg.cross(a_r, torch.tensor(bend).expand(T, 3))
                n_o = torch.linalg.cross(a_o, f_o)
                straight = n_o.norm(dim=-1) < 0.05 * a_o.norm(dim=-1) * f_o.norm(dim=-1)
                n_o = torch.where(straight[:, None], (glob @ n_r[..., None])[..., 0], n_o)
                g_root = _frame(a_o, n_o) @ _frame(a_r, n_r).transpose(-1, -2)
                l_root = glob.transpose(-1, -2) @ g_root
                l_mid = rotation_between(f_r, (g_root.transpose(-1, -2) @ f_o[..., None])[..., 0])
                valid = ok(*names)[:, None, None]
                jr, jm = JOINT_INDEX[names[0]], JOINT_INDEX[names[1]]
                local[:, jr] = torch.where(valid, l_root, local[:, jr])
                solved[:, jr] = solved[:, jm] = valid[:, 0, 0]
                local[:, jm] = torch.where(valid, l_mid, local[:, jm])
                # The end joint (ankle, wrist) points the foot or hand.
                g_mid = glob @ local[:, jr] @ local[:, jm]
                tip_from, tip_to = (
                    ((f"{side}_heel",), (f"{side}_big_toe",)) if root == "hip" else ((f"{side}_wrist",), (f"{side}_index1", f"{side}_pinky1"))
                )
                d_o = torch.stack([P(n) for n in tip_to]).mean(0) - torch.stack([P(n) for n in tip_from]).mean(0)
                d_r = torch.stack([R(n) for n in tip_to]).mean(0) - torch.stack([R(n) for n in tip_from]).mean(0)
                l_end = rotation_between(d_r, (g_mid.transpose(-1, -2) @ d_o[..., None])[..., 0])
                je = JOINT_INDEX[names[2]]
                valid_end = (ok(*names, *tip_from, *tip_to))[:, None, None]
                local[:, je] = torch.where(valid_end, l_end, local[:, je])
                solved[:, je] = valid_end[:, 0, 0]

        # A joint the IK could not solve in a frame (a keypoint was missed) takes its nearest solved frame's rotation.
        frames = torch.arange(T)
        for j in torch.nonzero(solved.any(0) & ~solved.all(0)).squeeze(1).tolist():
            idx = torch.nonzero(solved[:, j]).squeeze(1)
            nearest = idx[(frames[:, None] - idx[None]).abs().argmin(1)]
            local[:, j] = local[nearest, j]
        rotvec = roma.rotmat_to_rotvec(local)  # [T, 55, 3]
        lo, hi = joint_limits()  # the prior refines; clamp wild IK answers into range here
        rotvec[:, 1:22] = torch.maximum(torch.minimum(rotvec[:, 1:22], hi[1:22]), lo[1:22])
        params = {"global_orient": rotvec[:, 0], "body_pose": rotvec[:, 1:22].reshape(T, 63), self.shape_field: shape}
        joints = self.model.joints(params) * _FLIP  # camera axes, no translation
        t = _solve_translation(joints, points, conf, K)
        # Frames with too few keypoints take the nearest solved frame's translation.
        out = {"global_orient": params["global_orient"], "body_pose": params["body_pose"], "transl": t * _FLIP}
        # Frames without enough keypoints hold the nearest fitted pose.
        solved = (conf > 0.2).sum(1) >= 4
        if bool(solved.any()):
            idx = torch.nonzero(solved).squeeze(1)
            nearest = idx[(torch.arange(T)[:, None] - idx[None]).abs().argmin(1)]
            return {k: v[nearest] for k, v in out.items()}
        if self._last is not None:
            return {k: self._last[k].expand(T, -1).clone() for k in out}
        out["transl"] = (torch.tensor([0.0, 0.0, 3.0]) - joints[:, 0]) * _FLIP
        return out


def _project(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-space points [..., 3] -> pixels [..., 2] through intrinsics K [3, 3]."""
    uv = points @ K.T
    return uv[..., :2] / uv[..., 2:3].clamp_min(1e-3)


def _beyond_frame(kp: Keypoints) -> np.ndarray:
    """Which keypoints [T, J] the estimator placed beyond the frame's edge (its prediction, with
    confidence 0 there): a detected person's joints with a position outside the image."""
    h, w = kp.image_size
    p = kp.points
    outside = (p[..., 0] < 0) | (p[..., 0] >= w) | (p[..., 1] < 0) | (p[..., 1] >= h)
    return outside & kp.present[:, None] & (kp.confidence == 0)


def _person_size(kp: Keypoints) -> float:
    """The person's size in the image in pixels (the median over frames of the longer side of the
    confident keypoints' box), or the image's longer side when too few keypoints are confident."""
    sizes = []
    for t in range(len(kp)):
        good = kp.confidence[t] > 0.5
        if good.sum() >= 4:
            sizes.append(float(np.ptp(kp.points[t, good], axis=0).max()))
    return max(float(np.median(sizes)), 16.0) if sizes else float(max(kp.image_size))


def _frame(a: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Orthonormal frames [T, 3, 3] whose columns are a, n made orthogonal to a, and a x n."""
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    n = n - (n * a).sum(-1, keepdim=True) * a
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.stack([a, n, torch.linalg.cross(a, n)], dim=-1)


# The name tests/test_fit.py imports (studio.body.base.rotation_between serves every caller).


def _solve_translation(joints: torch.Tensor, points: torch.Tensor, conf: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-space translation t [T, 3] that best projects joints + t [T, J, 3] onto points [T, J, 2]
    (linear least squares on the pinhole equations, weighted by conf [T, J])."""
    f = (K[0, 0] + K[1, 1]) / 2
    du = points[..., 0] - K[0, 2]
    dv = points[..., 1] - K[1, 2]
    X, Y, Z = joints.unbind(-1)
    zero = torch.zeros_like(du)
    fj = torch.full_like(du, float(f))
    A = torch.stack([torch.stack([fj, zero, -du], -1), torch.stack([zero, fj, -dv], -1)], dim=2)  # [T, J, 2, 3]
    b = torch.stack([du * Z - f * X, dv * Z - f * Y], dim=-1)  # [T, J, 2]
    w = conf.clamp_min(0)[..., None]
    A = (A * w[..., None]).reshape(A.shape[0], -1, 3)
    b = (b * w).reshape(b.shape[0], -1)
    AtA = A.transpose(1, 2) @ A + 1e-6 * torch.eye(3)
    t = torch.linalg.solve(AtA, (A.transpose(1, 2) @ b[..., None]))[..., 0]
    # Keep the body in front of the camera.
    t[:, 2] = torch.maximum(t[:, 2], 0.3 - joints[..., 2].min(dim=1).values)
    return t
