"""Rendering 3D Gaussians, with two backends behind one function (``render_gaussians``):

- ``cpu``: studio's own. The projection is plain torch (differentiable: the fit optimises through
  it), binning is a counting sort of (tile, depth) pairs, and compositing is a numba kernel run in
  parallel over 8-pixel tiles, front to back with a per-pixel early exit; its backward pass is a
  second numba kernel (the per-pixel reverse pass of the 3DGS paper), so the fit runs on a CPU.
- ``gsplat``: gsplat's CUDA ``rasterization()``, when a CUDA GPU is present.

The CPU path follows gsplat's conventions, so the two agree: pixel centres at +0.5, a 0.3 px^2
low-pass added to every projected covariance, alpha = min(0.999, opacity * exp(-sigma)), Gaussians
under 1/255 alpha skipped, a pixel finished when its transmittance would drop to 1e-4. Screen
extents are the ellipse's bounding box at the Mahalanobis radius where the Gaussian's alpha falls
to 1/255 (sqrt(2 ln(255 opacity)); 3.33 for an opaque one, gsplat's radius).

Threads: the kernels run on numba's "workqueue" threading layer, under a lock (that layer takes one
launch at a time). numba's OpenMP layer would share torch's OpenMP runtime, resetting its thread
count and spinning against it: several times slower on a busy machine, and it undoes studio's
one-torch-thread jobs (``studio.fit.fitter.one_torch_thread``). ``render_gaussians`` runs torch on one
thread itself (with torch's default threads and the kernels alternating, a render took 10x as long
on a busy machine); the fit's backward pass should run under ``one_torch_thread`` too (the pipeline's does).

Conventions: OpenCV camera axes, world-to-camera ``viewmat`` [4, 4], intrinsics ``K`` [3, 3] in
pixels, images [H, W, C] float.
"""

from __future__ import annotations

import dataclasses
import math
import threading

import numba
import numpy as np
import torch
from numba import njit, prange

numba.config.THREADING_LAYER = "workqueue"  # see the module docstring; set before any kernel runs
_LAUNCH = threading.Lock()
TILE = 8
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EPS2D = 0.3
NEAR = 0.01
_GRAD_FIELDS = 9  # d mean2d (2), d conic (3), d opacity (1), d colour (3)


# --- projection (torch, differentiable) ----------------------------------------------------------


@dataclasses.dataclass
class Projected:
    """Gaussians seen by one camera."""

    means2d: torch.Tensor  # [N, 2] pixels
    conics: torch.Tensor  # [N, 3] upper triangle (a, b, c) of the inverse 2D covariance
    depths: torch.Tensor  # [N] camera-axis depth, metres
    cov2d: torch.Tensor  # [N, 3] (xx, xy, yy) of the 2D covariance, low-pass included
    valid: torch.Tensor  # [N] bool: in front of the near plane with a positive determinant


def project_gaussians(
    means: torch.Tensor,
    covars: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    *,
    width: int,
    height: int,
    eps2d: float = EPS2D,
    near: float = NEAR,
) -> Projected:
    """EWA projection of 3D Gaussians to the image (gsplat's pinhole projection, in torch).

    Args:
        means: [N, 3] world positions.
        covars: [N, 3, 3] world covariances.
        viewmat: [4, 4] world -> camera (OpenCV axes).
        K: [3, 3] intrinsics in pixels.
        width, height: the image size (the Jacobian's field-of-view clamp uses it, as gsplat's does).
    Returns:
        Projected means2d [N, 2], conics [N, 3], depths [N], cov2d [N, 3], valid [N].
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    mc = means @ R.T + t  # [N, 3]
    tx, ty, tz = mc.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    z = tz.clamp_min(1e-6)
    # The Jacobian is evaluated at the mean clamped to 1.3x the field of view (as gsplat does).
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    jx = z * torch.clamp(tx / z, min=-lim_xn, max=lim_xp)
    jy = z * torch.clamp(ty / z, min=-lim_yn, max=lim_yp)
    # W = J R: rows of the 2x3 map from world offsets to pixel offsets.
    w0 = (fx / z)[:, None] * R[0] - (fx * jx / z**2)[:, None] * R[2]  # [N, 3]
    w1 = (fy / z)[:, None] * R[1] - (fy * jy / z**2)[:, None] * R[2]
    s0 = torch.einsum("nij,nj->ni", covars, w0)
    s1 = torch.einsum("nij,nj->ni", covars, w1)
    xx = (w0 * s0).sum(-1) + eps2d
    xy = (w0 * s1).sum(-1)
    yy = (w1 * s1).sum(-1) + eps2d
    det = (xx * yy - xy * xy).clamp_min(1e-10)
    conics = torch.stack([yy / det, -xy / det, xx / det], -1)
    means2d = torch.stack([fx * tx / z + cx, fy * ty / z + cy], -1)
    valid = (tz > near) & (xx * yy - xy * xy > 0)
    return Projected(means2d=means2d, conics=conics, depths=tz, cov2d=torch.stack([xx, xy, yy], -1), valid=valid)


def screen_extents(projected: Projected, opacities: torch.Tensor, *, width: int, height: int) -> np.ndarray:
    """Half-extents [N, 2] float32 in pixels of each Gaussian's bounding box where its alpha stays
    over 1/255 (zero for Gaussians that cannot show: invalid, too faint or off screen)."""
    with torch.no_grad():
        op = opacities.detach().clamp(1e-12, 1.0)
        k2 = (2.0 * torch.log(255.0 * op)).clamp_min(0.0)
        k = torch.sqrt(k2)
        cov = projected.cov2d.detach()
        ext = torch.stack([k * cov[:, 0].clamp_min(0).sqrt(), k * cov[:, 2].clamp_min(0).sqrt()], -1)
        m = projected.means2d.detach()
        show = projected.valid & (op >= ALPHA_MIN) & (m[:, 0] + ext[:, 0] > 0) & (m[:, 0] - ext[:, 0] < width)
        show &= (m[:, 1] + ext[:, 1] > 0) & (m[:, 1] - ext[:, 1] < height)
        ext[~show] = 0.0
        return ext.numpy().astype(np.float32)


# --- binning (numba): (tile, depth)-ordered lists of Gaussians ------------------------------------


@njit(cache=True)
def _bin_tiles(means2d, extents, order, tiles_x, tiles_y, tile):  # pragma: no cover - compiled
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(n_tiles + 1, np.int64)
    rects = np.zeros((order.shape[0], 4), np.int64)
    for k in range(order.shape[0]):
        g = order[k]
        ex, ey = extents[g, 0], extents[g, 1]
        if ex <= 0.0 or ey <= 0.0:
            rects[k, 0] = 0
            rects[k, 1] = 0
            continue
        x0 = max(0, int(math.floor((means2d[g, 0] - ex) / tile)))
        x1 = min(tiles_x, int(math.floor((means2d[g, 0] + ex) / tile)) + 1)
        y0 = max(0, int(math.floor((means2d[g, 1] - ey) / tile)))
        y1 = min(tiles_y, int(math.floor((means2d[g, 1] + ey) / tile)) + 1)
        rects[k, 0], rects[k, 1], rects[k, 2], rects[k, 3] = x0, x1, y0, y1
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                counts[ty * tiles_x + tx + 1] += 1
    for i in range(n_tiles):
        counts[i + 1] += counts[i]
    ids = np.empty(counts[n_tiles], np.int32)
    fill = counts[:n_tiles].copy()
    for k in range(order.shape[0]):  # in depth order, so each tile's list is sorted by depth
        x0, x1, y0, y1 = rects[k, 0], rects[k, 1], rects[k, 2], rects[k, 3]
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                t = ty * tiles_x + tx
                ids[fill[t]] = order[k]
                fill[t] += 1
    return counts, ids


@dataclasses.dataclass
class Bins:
    """Per-tile lists of Gaussians, nearest first."""

    offsets: np.ndarray  # [tiles + 1] int64: tile t's Gaussians are ids[offsets[t]:offsets[t + 1]]
    ids: np.ndarray  # [M] int32 Gaussian indices
    tiles_x: int
    tiles_y: int


def bin_gaussians(means2d: np.ndarray, extents: np.ndarray, depths: np.ndarray, *, width: int, height: int, tile: int = TILE) -> Bins:
    """Sort Gaussians into screen tiles, each tile's list in depth order.

    Args:
        means2d: [N, 2] pixels; extents: [N, 2] half-extents (zero: not drawn); depths: [N].
    """
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    drawn = np.flatnonzero((extents[:, 0] > 0) & (extents[:, 1] > 0))
    order = drawn[np.argsort(depths[drawn], kind="stable")].astype(np.int64)
    offsets, ids = _bin_tiles(np.ascontiguousarray(means2d, np.float32), np.ascontiguousarray(extents, np.float32), order, tiles_x, tiles_y, tile)
    return Bins(offsets=offsets, ids=ids, tiles_x=tiles_x, tiles_y=tiles_y)


# --- compositing (numba): forward and backward -----------------------------------------------------


@njit(inline="always", cache=True)
def _splat(means2d, conics, opacities, g, fx, fy):  # pragma: no cover - compiled
    """Row g's Gaussian at the pixel centre (fx, fy): the offset (dx, dy), the falloff exp(-sigma)
    and opacity times it (both 0 where sigma < 0)."""
    dx = fx - means2d[g, 0]
    dy = fy - means2d[g, 1]
    sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
    if sigma < 0.0:
        return dx, dy, 0.0, 0.0
    gauss = math.exp(-sigma)
    return dx, dy, gauss, opacities[g] * gauss


@njit(inline="always", cache=True)
def _tile_box(t, tiles_x, tile, width, height):  # pragma: no cover - compiled
    """Pixel box (x0, x1, y0, y1) of tile t."""
    y0 = (t // tiles_x) * tile
    x0 = (t % tiles_x) * tile
    return x0, min(x0 + tile, width), y0, min(y0 + tile, height)


@njit(parallel=True, cache=True)
def _pack(means2d, conics, colors, opacities, ids):  # pragma: no cover - compiled
    """Each tile-list entry's Gaussian as one contiguous row [mx, my, a, b, c, opacity, colour...]:
    the compositor then reads its lists front to back in order."""
    C = colors.shape[1]
    packed = np.empty((ids.shape[0], 6 + C), np.float32)
    for k in prange(ids.shape[0]):
        g = ids[k]
        packed[k, 0], packed[k, 1] = means2d[g, 0], means2d[g, 1]
        packed[k, 2], packed[k, 3], packed[k, 4] = conics[g, 0], conics[g, 1], conics[g, 2]
        packed[k, 5] = opacities[g]
        for c in range(C):
            packed[k, 6 + c] = colors[g, c]
    return packed


@njit(parallel=True, cache=True, fastmath=False)
def _composite_forward(means2d, conics, colors, opacities, offsets, ids, tiles_x, width, height, tile):  # pragma: no cover - compiled
    C = colors.shape[1]
    packed = _pack(means2d, conics, colors, opacities, ids)
    image = np.zeros((height, width, C), np.float32)
    final_t = np.ones((height, width), np.float32)
    last = np.zeros((height, width), np.int32)  # entries of the tile list visited (the last one that counted + 1)
    n_tiles = offsets.shape[0] - 1
    for t in prange(n_tiles):
        start, end = offsets[t], offsets[t + 1]
        if start == end:
            continue
        x0, x1, y0, y1 = _tile_box(t, tiles_x, tile, width, height)
        acc = np.zeros(C, np.float32)
        for py in range(y0, y1):
            for px in range(x0, x1):
                T = 1.0
                stop = start
                acc[:] = 0.0
                for k in range(start, end):
                    alpha = min(0.999, _splat(packed[:, 0:2], packed[:, 2:5], packed[:, 5], k, px + 0.5, py + 0.5)[3])
                    if alpha < 1.0 / 255.0:  # also where sigma < 0
                        continue
                    next_t = T * (1.0 - alpha)
                    if next_t <= 1e-4:
                        break
                    w = alpha * T
                    for c in range(C):
                        acc[c] += w * packed[k, 6 + c]
                    T = next_t
                    stop = k + 1
                for c in range(C):
                    image[py, px, c] = acc[c]
                final_t[py, px] = T
                last[py, px] = stop
    return image, final_t, last


@njit(parallel=True, cache=True, fastmath=False)
def _composite_backward(means2d, conics, colors, opacities, offsets, ids, tiles_x, width, height, tile, final_t, last, grad_image, grad_alpha, n_threads):  # pragma: no cover - compiled
    N, C = colors.shape
    grads = np.zeros((n_threads, N, 6 + C), np.float32)
    packed = _pack(means2d, conics, colors, opacities, ids)
    p_means, p_conics, p_opacities = packed[:, 0:2], packed[:, 2:5], packed[:, 5]
    n_tiles = offsets.shape[0] - 1
    for t in prange(n_tiles):
        start = offsets[t]
        if start == offsets[t + 1]:
            continue
        tid = numba.get_thread_id()
        x0, x1, y0, y1 = _tile_box(t, tiles_x, tile, width, height)
        behind = np.zeros(C, np.float32)
        for py in range(y0, y1):
            for px in range(x0, x1):
                T_end = final_t[py, px]
                T = T_end  # transmittance after the Gaussian being undone
                for c in range(C):
                    behind[c] = 0.0
                ga = grad_alpha[py, px]
                for k in range(last[py, px] - 1, start - 1, -1):
                    g = ids[k]
                    dx, dy, gauss, raw = _splat(p_means, p_conics, p_opacities, k, px + 0.5, py + 0.5)
                    alpha = min(0.999, raw)
                    if alpha < 1.0 / 255.0:  # also where sigma < 0
                        continue
                    T = T / (1.0 - alpha)  # transmittance in front of this Gaussian
                    w = alpha * T
                    d_alpha = 0.0
                    for c in range(C):
                        gc = grad_image[py, px, c]
                        grads[tid, g, 6 + c] += w * gc
                        d_alpha += gc * (packed[k, 6 + c] * T - behind[c] / (1.0 - alpha))
                        behind[c] += packed[k, 6 + c] * w
                    d_alpha += ga * T_end / (1.0 - alpha)
                    if raw > 0.999:  # clamped: no gradient through the clamp
                        continue
                    grads[tid, g, 5] += d_alpha * gauss
                    d_sigma = -d_alpha * alpha
                    grads[tid, g, 0] += -d_sigma * (p_conics[k, 0] * dx + p_conics[k, 1] * dy)
                    grads[tid, g, 1] += -d_sigma * (p_conics[k, 1] * dx + p_conics[k, 2] * dy)
                    grads[tid, g, 2] += d_sigma * 0.5 * dx * dx
                    grads[tid, g, 3] += d_sigma * dx * dy
                    grads[tid, g, 4] += d_sigma * 0.5 * dy * dy
    return grads.sum(axis=0)


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of projected Gaussians over given tile lists (CPU, numba)."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, bins: Bins, width: int, height: int):
        args = (_np(means2d), _np(conics), _np(colors), _np(opacities))
        with _LAUNCH:
            image, final_t, last = _composite_forward(*args, bins.offsets, bins.ids, bins.tiles_x, width, height, TILE)
        ctx.saved = (args, bins, width, height, final_t, last)
        return torch.from_numpy(image), torch.from_numpy(1.0 - final_t)

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        args, bins, width, height, final_t, last = ctx.saved
        gi = _np(grad_image) if grad_image is not None else np.zeros((height, width, args[2].shape[1]), np.float32)
        ga = _np(grad_alpha) if grad_alpha is not None else np.zeros((height, width), np.float32)
        with _LAUNCH:
            g = _composite_backward(*args, bins.offsets, bins.ids, bins.tiles_x, width, height, TILE, final_t, last, gi, ga, numba.get_num_threads())
        g = torch.from_numpy(g)
        return g[:, 0:2], g[:, 2:5], g[:, 6:], g[:, 5], None, None, None


def composite(means2d, conics, colors, opacities, bins: Bins, *, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite projected Gaussians front to back (differentiable in all four tensors).

    Args:
        means2d: [N, 2]; conics: [N, 3]; colors: [N, C]; opacities: [N] in (0, 1); bins: from
        ``bin_gaussians``.
    Returns:
        image [H, W, C] (premultiplied: over black) and alpha [H, W].
    """
    return _Composite.apply(means2d, conics, colors, opacities, bins, width, height)


# --- one API for both backends -----------------------------------------------------------------


@dataclasses.dataclass
class Rendered:
    image: torch.Tensor  # [H, W, C] over the background
    alpha: torch.Tensor  # [H, W]
    means2d: torch.Tensor | None = None  # [N, 2] (CPU backend; its grad drives densification)
    visible: torch.Tensor | None = None  # [N] bool: drawn in this view


def resolve_backend(backend: str) -> str:
    """"auto" -> "gsplat" when a CUDA GPU is present, else "cpu"."""
    if backend == "auto":
        return "gsplat" if torch.cuda.is_available() else "cpu"
    if backend not in ("cpu", "gsplat"):
        raise ValueError(f"unknown renderer '{backend}'; choose auto, cpu or gsplat")
    if backend == "gsplat" and not torch.cuda.is_available():
        raise ValueError("the gsplat renderer needs a CUDA GPU; use the cpu renderer here")
    return backend


def render_gaussians(
    means: torch.Tensor,
    covars: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    *,
    width: int,
    height: int,
    background: torch.Tensor | None = None,
    backend: str = "cpu",
) -> Rendered:
    """Render Gaussians for one camera.

    Args:
        means: [N, 3] world; covars: [N, 3, 3] world; colors: [N, C]; opacities: [N] in (0, 1).
        viewmat: [4, 4] world -> camera; K: [3, 3].
        background: [C] colour behind the Gaussians (default black).
        backend: "cpu" (studio's, differentiable) or "gsplat" (CUDA).
    Returns:
        Rendered with image [H, W, C] and alpha [H, W].
    """
    from studio.fit.fitter import one_torch_thread

    backend = resolve_backend(backend)
    if backend == "gsplat":
        return _render_gsplat(means, covars, colors, opacities, viewmat, K, width=width, height=height, background=background)
    with one_torch_thread():  # torch's spinning OpenMP threads would fight the kernel's (see the module docstring)
        proj = project_gaussians(means, covars, viewmat, K, width=width, height=height)
        extents = screen_extents(proj, opacities, width=width, height=height)
        bins = bin_gaussians(_np(proj.means2d), extents, _np(proj.depths), width=width, height=height)
        means2d = proj.means2d
        image, alpha = composite(means2d, proj.conics, colors, opacities, bins, width=width, height=height)
    if background is not None:
        image = image + background.to(image) * (1.0 - alpha)[..., None]
    return Rendered(image=image, alpha=alpha, means2d=means2d, visible=torch.from_numpy(extents[:, 0] > 0))


def _render_gsplat(means, covars, colors, opacities, viewmat, K, *, width, height, background) -> Rendered:
    from gsplat import rasterization

    device = torch.device("cuda")
    N = means.shape[0]
    image, alpha, _ = rasterization(
        means.to(device), torch.zeros(N, 4, device=device), torch.zeros(N, 3, device=device), opacities.to(device), colors.to(device),
        viewmat[None].to(device), K[None].to(device), width, height, covars=covars.to(device), eps2d=EPS2D, near_plane=NEAR,
        backgrounds=None if background is None else background[None].to(device), packed=False,
    )  # fmt: skip
    # Back on the inputs' device (the transfer is differentiable: the fit's losses stay where its data is).
    return Rendered(image=image[0].to(means.device), alpha=alpha[0, ..., 0].to(means.device))


__all__ = [
    "Bins",
    "Projected",
    "Rendered",
    "bin_gaussians",
    "composite",
    "project_gaussians",
    "render_gaussians",
    "resolve_backend",
    "screen_extents",
]
