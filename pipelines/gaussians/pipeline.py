"""``gaussians``: an animatable 3D Gaussian avatar from one photo (after MVD-HuGaS), on a CPU.

``avatar``: the photo's fitted body is textured from the photo; a multi-view prior shows the person
from an orbit of cameras (embedded: that textured body rendered; with weights: an SV3D-style video
diffusion model), the generated views' faces are repaired from the photo, and Gaussians bound to the
body's surface in its canonical pose are fitted to those views and the photo, with a pose correction
per generated view. The result is a standard 3DGS .ply in the canonical pose with the body binding
(see ``pipelines.gaussians.ply``).

``animate``: the avatar (built from the reference once, or read from ``--set avatar=FILE.ply``) posed
by every frame of the motion through the body's skinning and rendered by the Gaussian rasteriser.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from studio.errors import StudioError
from studio.fit.fitter import one_torch_thread
from studio.pipeline import AnimateRequest, AnimateResult, AvatarRequest, AvatarResult, PipelineBase

from .avatar import BodyBinding, GaussianAvatar, GaussianRig, concat_avatars, init_avatar, lift_silhouette, pose_gaussians
from .fit import FitSettings, fit_gaussians
from .prior import MeshOrbitPrior, PriorContext, fix_faces, orbit, photo_view, sample_image, still
from .raster import render_gaussians, resolve_backend

logger = logging.getLogger(__name__)

BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255), "green": (0, 177, 64)}
SV3D_FOLDER = "sv3d"


@dataclasses.dataclass
class GaussianConfig:
    """Settings of the Gaussian avatar pipeline."""

    views: int = 12
    """Orbit views the mesh prior renders for the fit (4-64; the SV3D prior always makes its 21)."""
    steps: int = 150
    """Optimisation steps, one view each (1-20000)."""
    prior: Literal["mesh", "sv3d"] = "mesh"
    """Multi-view prior: the photo-textured body rendered on an orbit (embedded), or an SV3D-style model (weights in WEIGHTS/sv3d/)."""
    gaussians: int = 30000
    """About how many Gaussians to start from (1000-500000); densification adds more."""
    size: int = 256
    """Side in pixels of the views the Gaussians are fitted to (32-1024)."""
    canonical: Literal["big", "t"] = "big"
    """Canonical pose the Gaussians are stored in: "big" (legs spread, as Gaussian avatars use) or "t"."""
    max_offset: float = 0.12
    """How far (metres, per axis) a Gaussian may sit from its point on the body (0.001-0.3)."""
    lift_silhouette: bool = True
    """Add Gaussians for the photo's person pixels the fitted body does not cover (hair, clothes, a thin fit)."""
    camera_alignment: bool = True
    """Optimise a pose correction per generated view (MVD-HuGaS's camera alignment) where the prior's cameras
    are nominal (SV3D); the mesh prior renders its views with exact cameras, so they are never corrected."""
    face_fix: bool = True
    """Repair the face in generated views from the photo, guided by the fitted body's depth."""
    densify: bool = False
    """Clone and split Gaussians where the fit needs detail (and prune transparent ones) every 50 steps;
    off by default: at the default 150 steps the new Gaussians have no time to settle (it lowered the
    photo's PSNR from 29 to 26 dB). Transparent Gaussians are pruned at the end either way."""
    renderer: Literal["auto", "cpu", "gsplat"] = "auto"
    """Rasteriser: gsplat's CUDA one when a GPU is present (auto), or studio's CPU one."""
    preview_frames: int = 48
    """Frames of the orbit preview (--preview; twice the fitted views' size) (0-360)."""
    avatar: Path | None = None
    """animate: a .ply made by `studio avatar` to animate, instead of building one from the reference."""
    background: Literal["inpaint", "black", "white", "green"] = "inpaint"
    """animate: behind the person: the photo with the person inpainted out, or a plain colour."""
    export_frames: Path | None = None
    """animate: a folder to write the posed avatar of every frame into, as frame_NNNNN.ply."""
    sv3d_checkpoint: str | None = None
    """SV3D prior: which .safetensors file of WEIGHTS/sv3d/ to load (default: sv3d_p, else sv3d_u, else the only one)."""
    sv3d_steps: int = 25
    """SV3D prior: denoising steps (1-200)."""
    sv3d_guidance: float = 2.5
    """SV3D prior: largest classifier-free guidance scale, reached at the frames opposite the photo (1-20)."""
    sv3d_resolution: int = 576
    """SV3D prior: side of its input and frames in pixels (576 as released; 64-1024, a multiple of 64)."""

    def __post_init__(self) -> None:
        checks = {
            "views": (self.views, 4, 64), "steps": (self.steps, 1, 20000), "gaussians": (self.gaussians, 1000, 500000),
            "size": (self.size, 32, 1024), "max_offset": (self.max_offset, 0.001, 0.3), "preview_frames": (self.preview_frames, 0, 360),
            "sv3d_steps": (self.sv3d_steps, 1, 200), "sv3d_guidance": (self.sv3d_guidance, 1.0, 20.0),
            "sv3d_resolution": (self.sv3d_resolution, 64, 1024),
        }  # fmt: skip
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise ValueError(f"{name} must be {low}-{high}, got {value}")
        if self.sv3d_resolution % 64:
            raise ValueError(f"sv3d_resolution must be a multiple of 64, got {self.sv3d_resolution}")
        for name, value, choices in (("prior", self.prior, ("mesh", "sv3d")), ("canonical", self.canonical, ("big", "t")),
                                     ("renderer", self.renderer, ("auto", "cpu", "gsplat")), ("background", self.background, ("inpaint", *BACKGROUNDS))):  # fmt: skip
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    def fit_settings(self, *, exact_cameras: bool = False) -> FitSettings:
        """The fit's settings; ``exact_cameras``: the prior's views have exact cameras (no alignment)."""
        alignment = self.camera_alignment and not exact_cameras
        return FitSettings(steps=self.steps, camera_alignment=alignment, densify=self.densify, backend=resolve_backend(self.renderer))


def find_sv3d_checkpoint(root: Path | None, name: str | None = None) -> tuple[Path | None, str]:
    """The SV3D checkpoint to load and where it was looked for: (file or None, message)."""
    if name is not None and (Path(name).name != name or name in (".", "..")):
        return None, f"sv3d_checkpoint={name!r}: give the name of a file in WEIGHTS/{SV3D_FOLDER}/, not a path"
    if root is None:
        return None, f"no weights folder (--weights or STUDIO_WEIGHTS) holding {SV3D_FOLDER}/sv3d_p.safetensors (from huggingface.co/stabilityai/sv3d)"
    folder = Path(root) / SV3D_FOLDER
    if not folder.is_dir():
        return None, f"no {folder}/ (put sv3d_p.safetensors or sv3d_u.safetensors from huggingface.co/stabilityai/sv3d there)"
    if name is not None:
        path = folder / name
        return (path, str(path)) if path.is_file() else (None, f"no {path}")
    files = sorted(folder.glob("*.safetensors"))
    for preferred in ("sv3d_p.safetensors", "sv3d_u.safetensors"):
        if folder / preferred in files:
            return folder / preferred, str(folder / preferred)
    if len(files) == 1:
        return files[0], str(files[0])
    if not files:
        return None, f"no .safetensors in {folder}/ (sv3d_p.safetensors or sv3d_u.safetensors from huggingface.co/stabilityai/sv3d)"
    return None, f"several checkpoints in {folder}/ ({', '.join(f.name for f in files)}); choose one with --set sv3d_checkpoint=NAME"


class GaussianAvatarPipeline(PipelineBase):
    """Animatable 3D Gaussian avatars from one photo (MVD-HuGaS-style; embedded mesh prior, CPU)."""

    name = "gaussians"
    tasks = ("avatar", "animate")
    Config = GaussianConfig
    required_conditions = ("reference", "reference_mask", "reference_condition")
    embedded = True
    default_for = ("avatar",)
    chunk_frames = 16
    output_suffixes = (".ply",)
    weights_help = "none for the embedded mesh prior; SV3D prior: WEIGHTS/sv3d/sv3d_p.safetensors (huggingface.co/stabilityai/sv3d)"

    def __init__(self, config: GaussianConfig | None = None, *, prior=None) -> None:
        self.config = config or GaussianConfig()
        self.prior = prior or MeshOrbitPrior()
        self.backend = resolve_backend(self.config.renderer)
        self._built: tuple[int, GaussianAvatar] | None = None  # (id of the reference, avatar)
        self._loaded: tuple[tuple, GaussianAvatar] | None = None  # ((path, mtime), avatar)
        self._checked: tuple[tuple, str] | None = None  # ((path, mtime), body model) of the last binding check
        self._background: tuple[int, tuple[int, int], np.ndarray] | None = None
        self.last_report: dict = {}

    @classmethod
    def weights_status(cls, root: Path | None) -> tuple[bool, str]:
        found, where = find_sv3d_checkpoint(root)
        return True, f"embedded; the SV3D prior (--set prior=sv3d): {where if found else 'not found: ' + where}"

    @classmethod
    def load(cls, weights: Path | None, config: GaussianConfig) -> GaussianAvatarPipeline:
        prior = None
        if config.prior == "sv3d":
            path, where = find_sv3d_checkpoint(weights, config.sv3d_checkpoint)
            if path is None:
                raise StudioError(f"the SV3D prior's weights are missing: {where}")
            from .sv3d import SV3DPrior

            prior = SV3DPrior.from_checkpoint(path, steps=config.sv3d_steps, guidance=config.sv3d_guidance, resolution=config.sv3d_resolution)
        pipe = cls(config, prior=prior)
        if config.export_frames is not None and Path(config.export_frames).exists() and not Path(config.export_frames).is_dir():
            raise StudioError(f"export_frames={config.export_frames}: a file, not a folder for the posed frames")
        if config.avatar is not None:
            pipe._read_avatar()  # a wrong file is refused now, before the job fits the reference
        return pipe

    def start(self, request) -> None:
        """animate with ``avatar=FILE``: check the file's binding against the run's body model as soon
        as the job knows it (before any frame is rendered or checkpointed)."""
        if isinstance(request, AnimateRequest) and self.config.avatar is not None and request.body_model is not None:
            self._read_avatar(request.body_model)

    # --- building the avatar -------------------------------------------------------------------

    def build(self, image: np.ndarray, mask: np.ndarray, condition, body_model, *, seed: int = 0, on_progress=None) -> GaussianAvatar:
        """The fitted avatar of the person in ``image`` (see the module docstring); the fit's report
        is kept in ``last_report``. torch runs on one thread meanwhile (studio's jobs do; the
        rasteriser's kernels use every core)."""
        with one_torch_thread():
            return self._build(image, mask, condition, body_model, seed=seed, on_progress=on_progress)

    def _build(self, image: np.ndarray, mask: np.ndarray, condition, body_model, *, seed: int, on_progress) -> GaussianAvatar:
        from studio.texture import build_avatar

        cfg = self.config
        if mask is None or int((mask > 127).sum()) < 64:
            raise StudioError("no person found in the reference (its person mask is empty)")
        generator = torch.Generator().manual_seed(seed)
        texture = build_avatar(image, mask, condition, body_model=body_model, output_size=(8, 8), background=np.zeros((8, 8, 3), np.uint8))
        context = PriorContext(image=image, mask=mask, condition=condition, body_model=body_model, texture=texture, seed=seed)
        complete = body_model.complete_params({k: v[:1] for k, v in condition.body.items()})
        shape = {k: complete[k].detach().clone() for k in body_model.shape_dims}
        binding = BodyBinding(body_model=body_model.name, shape=shape, canonical=cfg.canonical, max_offset=cfg.max_offset)
        with torch.no_grad():
            vertices = body_model.rest_vertices(binding.params(), canonical=cfg.canonical)[0]
        colors_at = _texture_sampler(image, texture.texture_coords, body_model.faces)
        avatar = init_avatar(vertices, body_model.faces, body_model.part_labels, binding, count=cfg.gaussians, colors_at=colors_at, generator=generator)
        rig = GaussianRig(body_model, binding, avatar.face_ids, avatar.barycentric)
        A, offsets = rig.frame_transforms(condition.body)
        prior_units = 3
        total = prior_units + cfg.steps

        def step_progress(done: int, _total: int) -> None:
            if on_progress is not None:
                on_progress(prior_units + done, total)

        cameras = self.prior.cameras(context, num_views=cfg.views, size=cfg.size)
        views = self.prior.generate(context, cameras)
        views = _away_from_photo(views, condition, body_model)
        repaired = 0
        if cfg.face_fix:
            views, repaired = fix_faces(views, context)
        photo = photo_view(context, size=cfg.size)
        lifted = None
        if cfg.lift_silhouette:
            depth = still(condition, photo.camera).render(("depth_metric",), body_model=body_model)["depth_metric"][0]
            posed = condition.posed(body_model).vertices[0]
            lifted = lift_silhouette(
                photo.images[0], photo.masks[0], depth, photo.camera, posed_vertices=posed, body=condition.body, binding=binding,
                rig_for=lambda f, b: GaussianRig(body_model, binding, f, b),
            )  # fmt: skip
            if lifted is not None:
                avatar = concat_avatars(avatar, lifted)
                rig = GaussianRig(body_model, binding, avatar.face_ids, avatar.barycentric)
                A, offsets = rig.frame_transforms(condition.body)
        if on_progress is not None:
            on_progress(prior_units, total)
        fitted, report = fit_gaussians(
            avatar, anchors=rig.anchors(), transforms=A[0], offsets=offsets[0], orbit=views, photo=photo,
            settings=cfg.fit_settings(exact_cameras=getattr(self.prior, "exact_cameras", False)), generator=generator, on_step=step_progress,
        )  # fmt: skip
        report.update(views=len(views), faces_repaired=repaired, prior=self.prior.name, lifted=0 if lifted is None else lifted.num_gaussians)
        self.last_report = {**report, "orbit_views": views, "photo_view": photo, "context": context}
        return fitted

    def avatar(self, request: AvatarRequest) -> AvatarResult:
        """Fit the avatar to the photo and write it to ``request.output`` (a .ply, through
        ``studio.outputs.atomic_path``: published with the job's other outputs)."""
        from .ply import save_avatar

        cfg = self.config
        preview_total = cfg.preview_frames
        total_hint = [0]

        def progress(done: int, total: int) -> None:
            total_hint[0] = total + preview_total
            if request.on_progress is not None:
                request.on_progress(done, total + preview_total)

        fitted = self.build(request.reference, request.reference_mask, request.reference_condition, request.body_model, seed=request.seed, on_progress=progress)
        save_avatar(request.output, fitted)
        preview = None
        if preview_total:
            fitted_units = total_hint[0] - preview_total

            def frame_done(done: int) -> None:
                if request.on_progress is not None:
                    request.on_progress(fitted_units + done, total_hint[0])

            preview = self.orbit_frames(
                fitted, request.reference_condition, request.body_model, num_frames=preview_total, size=min(1024, 2 * cfg.size), on_frame=frame_done
            )  # fmt: skip
        elif request.on_progress is not None:
            request.on_progress(total_hint[0], total_hint[0])
        return AvatarResult(path=Path(request.output), preview=preview)

    def orbit_frames(self, avatar: GaussianAvatar, condition, body_model, *, num_frames: int, size: int, on_frame=None) -> np.ndarray:
        """Frames [T, size, size, 3] uint8 of the avatar in the photo's pose on an orbit, over white."""
        context = PriorContext(image=None, mask=None, condition=condition, body_model=body_model, texture=None)
        cameras = orbit(context, num_views=num_frames, size=size)
        white = np.full((size, size, 3), 255, np.uint8)
        return self.render_posed(avatar, condition.body, cameras, body_model=body_model, background=white, on_frame=on_frame)

    def render_posed(self, avatar: GaussianAvatar, body: dict, camera, *, body_model, background: np.ndarray, on_frame=None) -> np.ndarray:
        """Frames [T, H, W, 3] uint8 of the avatar posed by ``body`` (T frames, or 1 for all) seen by
        ``camera`` (T frames), over ``background`` [H, W, 3] uint8; ``on_frame(frames done)`` after each."""
        rig = GaussianRig(body_model, avatar.binding, avatar.face_ids, avatar.barycentric)
        h, w = camera.image_size
        covars = avatar.covariances()
        colors, opacities = avatar.colors(), avatar.opacities()
        bg = torch.from_numpy(background.astype(np.float32) / 255.0)
        T = len(camera)
        A, offsets = rig.frame_transforms({k: v for k, v in body.items()})
        frames = np.empty((T, h, w, 3), np.uint8)
        with torch.no_grad(), one_torch_thread():
            for t in range(T):
                i = t if A.shape[0] > 1 else 0
                means, cov = pose_gaussians(avatar.means, covars, A[i], offsets[i])
                out = render_gaussians(means, cov, colors, opacities, camera.extrinsics[t], camera.K[t], width=w, height=h, backend=self.backend)
                image = out.image + bg * (1 - out.alpha[..., None])
                frames[t] = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
                if on_frame is not None:
                    on_frame(t + 1)
        return frames

    # --- animation ----------------------------------------------------------------------------

    def _avatar_for(self, request: AnimateRequest) -> GaussianAvatar:
        """The avatar to animate: the configured .ply, or one built from the reference (once)."""
        if self.config.avatar is not None:
            return self._read_avatar(request.body_model)
        if self._built is None or self._built[0] != id(request.reference):
            avatar = self.build(request.reference, request.reference_mask, request.reference_condition, request.body_model, seed=request.seed)
            self._built = (id(request.reference), avatar)
        return self._built[1]

    def _read_avatar(self, body_model=None) -> GaussianAvatar:
        """The ``avatar=`` file, read once (again if it changes), checked against ``body_model`` when given."""
        from .ply import load_avatar

        path = Path(self.config.avatar)
        if not path.is_file():
            raise StudioError(f"avatar={path}: no such file (make one with `studio avatar REF -o {path.name}`)")
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded, self._checked = (key, load_avatar(path)), None
        if body_model is not None and self._checked != (key, body_model.name):
            check_binding(self._loaded[1], body_model, path)
            self._checked = (key, body_model.name)
        return self._loaded[1]

    def _background_for(self, request: AnimateRequest) -> np.ndarray:
        h, w = request.size
        if self.config.background != "inpaint":
            return np.broadcast_to(np.array(BACKGROUNDS[self.config.background], np.uint8), (h, w, 3)).copy()
        if self._background is None or self._background[:2] != (id(request.reference), (h, w)):
            from studio.texture import inpaint_person

            self._background = (id(request.reference), (h, w), inpaint_person(request.reference, request.reference_mask, (h, w)))
        return self._background[2]

    def animate(self, request: AnimateRequest) -> AnimateResult:
        """Frames [T, H, W, 3] uint8 of the avatar in each pose of ``request.motion``."""
        avatar = self._avatar_for(request)
        motion = request.motion
        camera = motion.camera.resized(request.size)
        frames = self.render_posed(avatar, dict(motion.body), camera, body_model=request.body_model, background=self._background_for(request))
        if self.config.export_frames is not None:
            self._export(avatar, request)
        if request.on_progress is not None:
            request.on_progress(len(frames), len(frames))
        return AnimateResult(frames=frames)

    def _export(self, avatar: GaussianAvatar, request: AnimateRequest) -> None:
        from .ply import save_splat

        rig = GaussianRig(request.body_model, avatar.binding, avatar.face_ids, avatar.barycentric)
        A, offsets = rig.frame_transforms(dict(request.motion.body))
        covars = avatar.covariances()
        folder = Path(self.config.export_frames)
        for t in range(A.shape[0]):
            means, cov = pose_gaussians(avatar.means, covars, A[t], offsets[t])
            save_splat(folder / f"frame_{request.frame_offset + t:05d}.ply", means, cov, avatar)


def _away_from_photo(views, condition, body_model, *, min_angle: float = 25.0):
    """The views whose viewing direction is more than ``min_angle`` degrees from the photo's: the
    photo itself is the front view, and a generated view from (nearly) its viewpoint could only
    contradict it (the textured body's silhouette is not the person's)."""
    from studio.camera import camera_to_world

    from .prior import photo_viewpoint

    vp = photo_viewpoint(condition, body_model)
    eyes = camera_to_world(torch.zeros(len(views), 1, 3), views.camera.extrinsics)[:, 0]
    directions = torch.nn.functional.normalize(eyes - vp.centre, dim=-1)
    a, e = vp.azimuth, vp.elevation
    photo_dir = torch.tensor([math.sin(a) * math.cos(e), math.sin(e), math.cos(a) * math.cos(e)])
    keep = torch.nonzero(directions @ photo_dir < math.cos(math.radians(min_angle))).flatten()
    return dataclasses.replace(views, images=views.images[keep], masks=views.masks[keep], camera=views.camera.index(keep))


def _texture_sampler(image: np.ndarray, texture_coords: np.ndarray, faces: torch.Tensor):
    """(face_ids [N], barycentric [N, 3]) -> RGB [N, 3] in 0..1 from the textured body: each
    Gaussian's photo pixel interpolated across its triangle, then looked up bilinearly."""
    coords = torch.from_numpy(np.asarray(texture_coords, np.float32))
    photo = image.astype(np.float32) / 255.0

    def colors_at(face_ids: torch.Tensor, barycentric: torch.Tensor) -> torch.Tensor:
        px = torch.einsum("nk,nkc->nc", barycentric, coords[faces[face_ids]]).numpy()
        return torch.from_numpy(sample_image(photo, px))

    return colors_at


def check_binding(avatar: GaussianAvatar, body_model, path: Path) -> None:
    """Refuse an avatar whose binding does not fit the body model: one line naming the file."""
    if avatar.binding.body_model != body_model.name:
        raise StudioError(f"{path}: an avatar bound to the '{avatar.binding.body_model}' body model; this run uses '{body_model.name}'")
    if avatar.binding.canonical not in ("big", "t"):
        raise StudioError(f"{path}: unknown canonical pose '{avatar.binding.canonical}'")
    if avatar.num_gaussians and int(avatar.face_ids.max()) >= body_model.faces.shape[0]:
        raise StudioError(f"{path}: its Gaussians name body triangles up to {int(avatar.face_ids.max())}; the {body_model.name} body has {body_model.faces.shape[0]}")
    try:
        rig = GaussianRig(body_model, avatar.binding, avatar.face_ids, avatar.barycentric)
    except StudioError as exc:
        raise StudioError(f"{path}: {exc}") from None
    reach = (avatar.means - rig.anchors()).abs().amax() if avatar.num_gaussians else torch.tensor(0.0)
    if float(reach) > avatar.binding.max_offset * 1.01 + 1e-4:
        raise StudioError(f"{path}: its Gaussians sit up to {float(reach):.3f} m from their body anchors (more than its max_offset {avatar.binding.max_offset}); the file does not match its binding")


__all__ = ["GaussianAvatarPipeline", "GaussianConfig", "check_binding", "find_sv3d_checkpoint"]
