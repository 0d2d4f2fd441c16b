"""Fitting the avatar's Gaussians to the views (MVD-HuGaS's optimisation, on studio's rasteriser).

The Gaussians live in the canonical pose and are rendered in the photo's pose through their skinning
(a fixed affine map per Gaussian), so everything the fit learns is animatable. Per step, one view:

- loss: 0.8 L1 + 0.2 D-SSIM (1 - SSIM, 11-pixel Gaussian window) over a random background colour,
  plus an L1 between the rendered coverage and the view's person mask;
- camera alignment: every generated view has a pose correction (a rotation vector and a
  translation, both starting at zero) optimised with the Gaussians; the photo's camera is fixed;
- regularisers: opacity (pushes opacities towards 0 or 1) and scale (penalises Gaussians larger
  than ``max_scale`` metres, and needle-like ones);
- densify and prune (as 3DGS): Gaussians with a large mean screen-space gradient are cloned (small
  ones) or split in two (large ones); children keep their parent's anchor on the body, so the
  binding stays valid; nearly transparent Gaussians are pruned.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable

import torch

from studio.body.base import axis_angle_to_matrix

from .avatar import GaussianAvatar, quat_to_rotmat
from .prior import Views
from .raster import render_gaussians

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class FitSettings:
    """How the Gaussians are fitted (the pipeline's Config sets these)."""

    steps: int = 300
    photo_share: float = 0.5  # share of the steps that look at the photo
    ssim_weight: float = 0.2
    mask_weight: float = 0.5
    opacity_weight: float = 0.01
    scale_weight: float = 1.0
    max_scale: float = 0.03  # metres
    camera_alignment: bool = True
    densify: bool = True
    densify_every: int = 50
    densify_grad: float = 0.0002  # mean screen-space gradient (NDC units, as 3DGS) above which a Gaussian is densified
    max_gaussians: int = 120_000
    prune_opacity: float = 0.02
    lr_offset: float = 0.01
    lr_color: float = 0.01
    lr_opacity: float = 0.05
    lr_scale: float = 0.01
    lr_rotation: float = 0.003
    lr_camera: float = 0.001
    backend: str = "cpu"


# --- image losses ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _blur_matrix(n: int, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """[n, n] band matrix of a normalised Gaussian window (zero beyond the edges, as zero padding):
    blurring by matrix products is far faster on a CPU than a single-channel convolution."""
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    i = torch.arange(n)
    d = i[None, :] - i[:, None]
    return torch.where(d.abs() <= size // 2, g[(d + size // 2).clamp(0, size - 1)], torch.zeros(()))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity of two images [H, W, C] in 0..1 (11-pixel Gaussian window, sigma 1.5)."""
    H, W, _ = a.shape
    x, y = a.permute(2, 0, 1), b.permute(2, 0, 1)  # [C, H, W]
    stack = torch.cat([x, y, x * x, y * y, x * y])  # [5C, H, W]: every blur in one batch
    stack = _blur_matrix(H).to(a) @ stack @ _blur_matrix(W).to(a)
    mx, my, xx, yy, xy = stack.chunk(5)
    sxx, syy, sxy = xx - mx**2, yy - my**2, xy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean()


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR (dB) of images [H, W, C] in 0..1, over the pixels where ``mask`` [H, W] > 0.5."""
    err = (a - b).square().mean(-1)
    if mask is not None:
        err = err[mask > 0.5]
    mse = float(err.mean()) if err.numel() else 0.0
    return 99.0 if mse <= 1e-10 else -10.0 * math.log10(mse)


# --- the trainable state ----------------------------------------------------------------------------


class _State(torch.nn.Module):
    """The avatar's parameters as tensors the optimiser updates, plus fixed per-Gaussian data."""

    def __init__(self, avatar: GaussianAvatar, anchors: torch.Tensor, A: torch.Tensor, offsets: torch.Tensor, num_cameras: int) -> None:
        super().__init__()
        m = avatar.binding.max_offset
        rel = ((avatar.means - anchors) / m).clamp(-0.98, 0.98)
        self.raw_offset = torch.nn.Parameter(torch.atanh(rel))
        self.quats = torch.nn.Parameter(avatar.quats.clone())
        self.log_scales = torch.nn.Parameter(avatar.log_scales.clone())
        self.opacity_logits = torch.nn.Parameter(avatar.opacity_logits.clone())
        self.sh = torch.nn.Parameter(avatar.sh.clone())
        self.camera = torch.nn.Parameter(torch.zeros(num_cameras, 6))
        self.anchors, self.A, self.corrective = anchors, A, offsets  # [N, 3], [N, 3, 4], [N, 3]
        self.face_ids, self.barycentric = avatar.face_ids.clone(), avatar.barycentric.clone()
        self.max_offset = m

    def means(self) -> torch.Tensor:
        return self.anchors + self.max_offset * torch.tanh(self.raw_offset)

    def posed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Means [N, 3] and covariances [N, 3, 3] in the photo's pose."""
        L = self.A[..., :3]
        means = torch.einsum("nij,nj->ni", L, self.means() + self.corrective) + self.A[..., 3]
        M = (L @ quat_to_rotmat(self.quats)) * self.log_scales.exp()[:, None, :]
        return means, M @ M.transpose(-1, -2)

    def colors(self) -> torch.Tensor:
        from .avatar import SH_C0

        return (0.5 + SH_C0 * self.sh[:, 0]).clamp_min(0.0)

    def avatar(self, template: GaussianAvatar) -> GaussianAvatar:
        return dataclasses.replace(
            template, means=self.means().detach(), quats=self.quats.detach().clone(), log_scales=self.log_scales.detach().clone(),
            opacity_logits=self.opacity_logits.detach().clone(), sh=self.sh.detach().clone(), face_ids=self.face_ids.clone(),
            barycentric=self.barycentric.clone(),
        )  # fmt: skip

    def gaussian_params(self) -> list[str]:
        return ["raw_offset", "quats", "log_scales", "opacity_logits", "sh"]

    def reindex(self, index: torch.Tensor, fresh: torch.Tensor, changes: dict[str, torch.Tensor], optimizer: torch.optim.Adam) -> None:
        """Rows ``index`` [M] of every per-Gaussian tensor (repeats: children), or ``changes`` (parameter
        name -> all M new rows) where given; the optimiser's moments follow, zero where ``fresh`` [M]."""
        for name in self.gaussian_params():
            old = getattr(self, name)
            new = torch.nn.Parameter(changes[name] if name in changes else old.detach()[index])
            state = optimizer.state.pop(old, None)
            for group in optimizer.param_groups:
                group["params"] = [new if p is old else p for p in group["params"]]
            if state is not None:
                for key in ("exp_avg", "exp_avg_sq"):
                    moment = state[key][index].clone()
                    moment[fresh] = 0
                    state[key] = moment
                optimizer.state[new] = state
            setattr(self, name, new)
        for name in ("anchors", "A", "corrective", "face_ids", "barycentric"):
            setattr(self, name, getattr(self, name)[index])


def _camera(views: Views, v: int, correction: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """World -> camera [4, 4] of view v, with a pose correction [6] (rotation vector, translation)."""
    E = views.camera.extrinsics[v]
    if correction is None:
        return E, views.camera.K[v]
    top = torch.cat([axis_angle_to_matrix(correction[:3]), correction[3:, None]], 1)
    delta = torch.cat([top, torch.tensor([[0.0, 0.0, 0.0, 1.0]])], 0)
    return delta @ E, views.camera.K[v]


def fit_gaussians(
    avatar: GaussianAvatar,
    *,
    anchors: torch.Tensor,
    transforms: torch.Tensor,
    offsets: torch.Tensor,
    orbit: Views,
    photo: Views | None,
    settings: FitSettings,
    generator: torch.Generator,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[GaussianAvatar, dict]:
    """Fit the Gaussians to the orbit views and the photo.

    Args:
        avatar: the initial Gaussians (canonical).
        anchors: [N, 3] their anchors on the canonical body; transforms: [N, 3, 4] canonical -> photo
            pose; offsets: [N, 3] pose correctives.
        orbit: the prior's views (each gets a camera correction); photo: the photo view (fixed camera).
        generator: draws the view order and background colours.
    Returns:
        the fitted avatar and a report (final losses, Gaussian count, camera corrections).
    """
    from studio.fit.fitter import one_torch_thread

    with one_torch_thread():  # torch's OpenMP threads would fight the rasteriser's (see raster.py)
        return _fit(avatar, anchors, transforms, offsets, orbit, photo, settings, generator, on_step)


def _fit(avatar, anchors, transforms, offsets, orbit, photo, settings, generator, on_step) -> tuple[GaussianAvatar, dict]:
    state = _State(avatar, anchors, transforms, offsets, len(orbit))
    groups = [
        {"params": [state.raw_offset], "lr": settings.lr_offset},
        {"params": [state.quats], "lr": settings.lr_rotation},
        {"params": [state.log_scales], "lr": settings.lr_scale},
        {"params": [state.opacity_logits], "lr": settings.lr_opacity},
        {"params": [state.sh], "lr": settings.lr_color},
    ]
    if settings.camera_alignment:
        groups.append({"params": [state.camera], "lr": settings.lr_camera})
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    grad_sum = torch.zeros(state.raw_offset.shape[0])
    grad_count = torch.zeros(state.raw_offset.shape[0])
    losses: list[float] = []
    order: list[int] = []
    for step in range(settings.steps):
        use_photo = photo is not None and float(torch.rand((), generator=generator)) < settings.photo_share
        if use_photo:
            views, v, correction = photo, 0, None
        else:
            if not order:
                order = torch.randperm(len(orbit), generator=generator).tolist()
            views, v = orbit, order.pop()
            correction = state.camera[v] if settings.camera_alignment else None
        viewmat, K = _camera(views, v, correction)
        h, w = views.camera.image_size
        background = torch.rand(3, generator=generator)
        means, covars = state.posed()
        out = render_gaussians(means, covars, state.colors(), torch.sigmoid(state.opacity_logits), viewmat, K, width=w, height=h, background=background, backend=settings.backend)
        mask = views.masks[v]
        target = views.images[v] * mask[..., None] + background * (1 - mask[..., None])
        loss = (1 - settings.ssim_weight) * (out.image - target).abs().mean() + settings.ssim_weight * (1 - ssim(out.image, target))
        loss = loss + settings.mask_weight * (out.alpha - mask).abs().mean()
        opacity = torch.sigmoid(state.opacity_logits)
        loss = loss + settings.opacity_weight * (opacity * (1 - opacity)).mean()
        scales = state.log_scales.exp()
        loss = loss + settings.scale_weight * (torch.relu(scales.amax(-1) - settings.max_scale).mean() + 0.01 * torch.relu(scales.amax(-1) / scales.amin(-1) - 10.0).mean())
        if out.means2d is not None:
            out.means2d.retain_grad()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0 and logger.isEnabledFor(logging.DEBUG):
            sc = state.log_scales.detach().exp().amax(-1)
            logger.debug("step %d: loss %.4f, %d Gaussians, scale median %.4f max %.4f, opacity mean %.2f",
                         step, losses[-1], sc.numel(), float(sc.median()), float(sc.max()), float(torch.sigmoid(state.opacity_logits.detach()).mean()))
        if out.means2d is not None and out.means2d.grad is not None:
            grad_sum += out.means2d.grad.norm(dim=-1) * max(h, w) / 2.0
            grad_count += out.visible.float()
        if settings.densify and (step + 1) % settings.densify_every == 0 and step + 1 <= int(0.6 * settings.steps):
            _densify_and_prune(state, optimizer, grad_sum / grad_count.clamp_min(1), settings, generator)
            grad_sum = torch.zeros(state.raw_offset.shape[0])
            grad_count = torch.zeros(state.raw_offset.shape[0])
        if on_step is not None:
            on_step(step + 1, settings.steps)
    keep = torch.sigmoid(state.opacity_logits.detach()) > settings.prune_opacity / 2
    fitted = state.avatar(avatar).subset(keep)
    report = {
        "loss_first": sum(losses[:10]) / max(1, len(losses[:10])), "loss_last": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "losses": losses, "gaussians": fitted.num_gaussians, "camera_corrections": state.camera.detach().clone(),
    }  # fmt: skip
    return fitted, report


@torch.no_grad()
def _densify_and_prune(state: _State, optimizer: torch.optim.Adam, grad: torch.Tensor, settings: FitSettings, generator: torch.Generator) -> None:
    N = grad.shape[0]
    opacity = torch.sigmoid(state.opacity_logits)
    keep = opacity > settings.prune_opacity
    room = max(0, settings.max_gaussians - int(keep.sum()))
    chosen = torch.nonzero((grad > settings.densify_grad) & keep).flatten()
    if chosen.numel() > room:
        chosen = chosen[torch.argsort(grad[chosen], descending=True)[:room]]
    scales = state.log_scales.exp()
    big = scales.amax(-1) > 0.5 * settings.max_scale
    split, clone = chosen[big[chosen]], chosen[~big[chosen]]
    kept = torch.nonzero(keep & ~torch.isin(torch.arange(N), split)).flatten()
    # Split: two children sampled from the parent's Gaussian, 1.6 times smaller; clones: a copy.
    parents = torch.cat([split, split, clone])
    R = quat_to_rotmat(state.quats[parents])
    sample = torch.randn(parents.shape[0], 3, generator=generator) * scales[parents]
    step = torch.einsum("nij,nj->ni", R, sample)
    step[2 * split.numel() :] = 0
    # The step is in the posed space of the photo; bring it back to the canonical space.
    L = state.A[parents, :, :3]
    canonical_step = torch.linalg.solve(L, step[..., None])[..., 0]
    means = state.means()[parents] + canonical_step
    rel = ((means - state.anchors[parents]) / state.max_offset).clamp(-0.98, 0.98)
    log_scales = state.log_scales[parents].clone()
    log_scales[: 2 * split.numel()] -= math.log(1.6)
    index = torch.cat([kept, parents])
    fresh = torch.cat([torch.zeros(kept.numel(), dtype=torch.bool), torch.ones(parents.numel(), dtype=torch.bool)])
    changes = {
        "raw_offset": torch.cat([state.raw_offset[kept], torch.atanh(rel)]),
        "log_scales": torch.cat([state.log_scales[kept], log_scales]),
    }
    state.reindex(index, fresh, changes, optimizer)
    logger.debug("densify: mean screen gradients: median %.3g, 99%% %.3g", float(grad.median()), float(grad.quantile(0.99)))
    logger.debug("densify: %d cloned, %d split, %d pruned -> %d", clone.numel(), split.numel(), N - int(keep.sum()), index.numel())


__all__ = ["FitSettings", "fit_gaussians", "psnr", "ssim"]
