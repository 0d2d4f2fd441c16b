"""The Gaussian avatar pipeline: the CPU rasteriser against gsplat's torch references and brute-force
sums, the .ply format, reposing against the body model, the fit, the SV3D loader on tiny random
components, the shared contract, bad input, and (slow) the CLI, animate and the web demo."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ASSETS
from pipeline_contract import ContractCase, PipelineContract
from test_gradio_app import CHROMIUM, served_app  # noqa: F401

from pipelines.gaussians import GaussianAvatarPipeline
from pipelines.gaussians.avatar import (
    SH_C0,
    BodyBinding,
    GaussianAvatar,
    GaussianRig,
    covariance,
    decompose_covariance,
    pose_gaussians,
    quat_to_rotmat,
)
from pipelines.gaussians.fit import FitSettings, _densify_and_prune, _State, fit_gaussians, psnr, ssim
from pipelines.gaussians.ply import load_avatar, read_ply, save_avatar, splat_columns, splat_property_names, write_ply
from pipelines.gaussians.prior import Views
from pipelines.gaussians.raster import bin_gaussians, composite, project_gaussians, render_gaussians, screen_extents
from studio.camera import Camera
from studio.errors import StudioError
from studio.pipeline import AnimateRequest, AvatarRequest, make_config

# --- fixtures --------------------------------------------------------------------------------------


def random_gaussians(n: int, *, seed: int = 0, depth: float = 3.0, spread: float = 0.4, size: float = 0.08):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * spread + torch.tensor([0.0, 0.0, depth])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * size + 0.01
    colors = torch.rand(n, 3, generator=g)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05
    return means, quats, scales, colors, opacities


def pinhole(width: int, height: int, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    return torch.eye(4), K


TINY = dict(steps=3, gaussians=1000, size=48, views=4, preview_frames=0, face_fix=False)


@pytest.fixture(scope="module")
def synthetic(anny, walk):
    """A reference without pose estimation (fast): the walk's first frame as the fitted body, its
    normal map as the photo and its mask as the person mask; and 3 frames of the walk at 48 px."""
    ref = walk[0]
    ref = dataclasses.replace(ref, camera=ref.camera.resized(96))
    maps = ref.render(("normal", "mask"), body_model=anny)
    motion = walk[:3]
    motion = dataclasses.replace(motion, camera=motion.camera.resized(48))
    return maps["normal"][0], maps["mask"][0], ref, motion, motion.camera.image_size


@pytest.fixture(scope="module")
def fitted(anny):
    """The bundled photo (reduced) fitted, and a 3-frame walk transferred onto it at 64 px."""
    import cv2

    from studio.animate.transfer import transfer_motion
    from studio.camera import output_size
    from studio.capture import pose_image
    from studio.condition import HumanCondition
    from studio.media import read_image

    image = cv2.resize(read_image(ASSETS / "media" / "ref_sitting.jpg"), (480, 320), interpolation=cv2.INTER_AREA)
    ref = pose_image(image, body_model=anny)
    size = output_size(image.shape[:2], 64)
    walk = HumanCondition.load(ASSETS / "motions" / "walk.npz")[:3]
    motion, _ = transfer_motion(walk, ref.condition, motion_model=anny, reference_model=anny, image_size=size)
    return image, ref, motion, size


def tiny_pipeline(**settings) -> GaussianAvatarPipeline:
    return GaussianAvatarPipeline.load(None, make_config(GaussianAvatarPipeline, {**TINY, **settings}))


@pytest.fixture(scope="module")
def tiny_avatar(synthetic, anny, tmp_path_factory) -> Path:
    image, mask, ref, _, _ = synthetic
    path = tmp_path_factory.mktemp("avatar") / "avatar.ply"
    tiny_pipeline().avatar(AvatarRequest(image, mask, ref, anny, path))
    return path


# --- the rasteriser --------------------------------------------------------------------------------


def test_projection_matches_gsplat_reference():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    means, quats, scales, _, _ = random_gaussians(400)
    covars = covariance(quats, scales)
    reference, _ = _quat_scale_to_covar_preci(quats, scales, True, False)
    torch.testing.assert_close(covars, reference, rtol=1e-5, atol=1e-7)
    view, K = pinhole(64, 48, 60.0)
    view = torch.tensor([[0.96, -0.28, 0.0, 0.1], [0.28, 0.96, 0.0, -0.2], [0.0, 0.0, 1.0, 0.3], [0.0, 0.0, 0.0, 1.0]])
    ours = project_gaussians(means, covars, view, K, width=64, height=48)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, view[None], K[None], 64, 48)
    ok = ours.valid & (radii[0] > 0).all(-1)
    assert ok.sum() > 100
    torch.testing.assert_close(ours.means2d[ok], means2d[0][ok], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(ours.conics[ok], conics[0][ok], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.depths, depths[0])
    # An opaque Gaussian's screen extent is gsplat's radius (3.33 sigma, rounded up).
    ext = torch.from_numpy(screen_extents(ours, torch.ones(400), width=64, height=48))
    shown = ok & (ext > 0).all(-1)
    assert ((radii[0][shown].float() - ext[shown]).abs() <= 1.0).all()


def brute_force(means2d, conics, colors, opacities, depths, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel composited over every Gaussian, nearest first, with gsplat's rules (a loop)."""
    order = np.argsort(depths, kind="stable")
    image = np.zeros((height, width, colors.shape[1]))
    alpha = np.zeros((height, width))
    for y in range(height):
        for x in range(width):
            T, acc = 1.0, np.zeros(colors.shape[1])
            for g in order:
                dx, dy = x + 0.5 - means2d[g, 0], y + 0.5 - means2d[g, 1]
                sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
                a = min(0.999, opacities[g] * math.exp(-sigma))
                if sigma < 0 or a < 1 / 255:
                    continue
                if T * (1 - a) <= 1e-4:
                    break
                acc += a * T * colors[g]
                T *= 1 - a
            image[y, x], alpha[y, x] = acc, 1 - T
    return image, alpha


@pytest.mark.parametrize("opaque", [False, True])
def test_compositing_matches_a_brute_force_per_pixel_sum(opaque):
    means, quats, scales, colors, opacities = random_gaussians(120, seed=1, size=0.15)
    if opaque:  # most pixels saturate: the per-pixel early exit matters
        opacities = torch.full_like(opacities, 0.98)
    view, K = pinhole(28, 22, 30.0)
    proj = project_gaussians(means, covariance(quats, scales), view, K, width=28, height=22)
    ext = screen_extents(proj, opacities, width=28, height=22)
    bins = bin_gaussians(proj.means2d.numpy(), ext, proj.depths.numpy(), width=28, height=22)
    image, alpha = composite(proj.means2d, proj.conics, colors, opacities, bins, width=28, height=22)
    shown = ext[:, 0] > 0
    ref_image, ref_alpha = brute_force(
        proj.means2d.numpy()[shown], proj.conics.numpy()[shown], colors.numpy()[shown], opacities.numpy()[shown],
        proj.depths.numpy()[shown], 28, 22,
    )  # fmt: skip
    assert alpha.max() > 0.5 and (opaque or alpha.min() < 0.5)
    np.testing.assert_allclose(image.numpy(), ref_image, atol=2e-5)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, atol=2e-5)


def test_compositing_gradients_match_autograd_of_a_dense_reference():
    """The numba backward pass against torch autograd through a dense (every pixel x every
    Gaussian) implementation of the same compositing."""
    W, H = 24, 20
    means, quats, scales, colors, opacities = random_gaussians(80, seed=2, size=0.12)
    view, K = pinhole(W, H, 28.0)
    proj = project_gaussians(means, covariance(quats, scales), view, K, width=W, height=H)
    ext = screen_extents(proj, opacities, width=W, height=H)
    keep = torch.from_numpy(ext[:, 0] > 0)
    leaves = [t.detach()[keep].clone().requires_grad_() for t in (proj.means2d, proj.conics, colors, opacities)]
    depths = proj.depths[keep]

    def dense(m2, con, col, op):
        order = torch.argsort(depths)
        m2, con, col, op = m2[order], con[order], col[order], op[order]
        ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
        dx, dy = xs.reshape(-1, 1) - m2[:, 0], ys.reshape(-1, 1) - m2[:, 1]
        sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
        a = torch.clamp(op * torch.exp(-sigma), max=0.999)
        a = torch.where((sigma >= 0) & (a >= 1 / 255), a, torch.zeros_like(a))
        with torch.no_grad():
            stop = torch.cumsum((torch.cumprod(1 - a, 1) <= 1e-4).int(), 1) > 0
        a = torch.where(stop, torch.zeros_like(a), a)
        T = torch.cumprod(torch.cat([torch.ones(len(a), 1), 1 - a[:, :-1]], 1), 1)
        return (a * T) @ col, 1 - torch.prod(1 - a, 1)

    g_img, g_alpha = torch.randn(H * W, 3), torch.randn(H * W)
    img, alpha = dense(*leaves)
    ((img * g_img).sum() + (alpha * g_alpha).sum()).backward()
    expected = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    bins = bin_gaussians(leaves[0].detach().numpy(), ext[keep.numpy()], depths.numpy(), width=W, height=H)
    img2, alpha2 = composite(*leaves, bins, width=W, height=H)
    ((img2.reshape(-1, 3) * g_img).sum() + (alpha2.reshape(-1) * g_alpha).sum()).backward()
    for name, want, t in zip(("means2d", "conics", "colors", "opacities"), expected, leaves):
        torch.testing.assert_close(t.grad, want, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.gpu
def test_cpu_renderer_agrees_with_gsplat_cuda():
    """The two backends on one scene, within 2e-3 per channel (float32 on both; exp differs)."""
    means, quats, scales, colors, opacities = random_gaussians(3000, seed=3, size=0.03)
    view, K = pinhole(128, 96, 110.0)
    covars = covariance(quats, scales)
    bg = torch.tensor([0.2, 0.3, 0.4])
    cpu = render_gaussians(means, covars, colors, opacities, view, K, width=128, height=96, background=bg)
    gpu = render_gaussians(means, covars, colors, opacities, view, K, width=128, height=96, background=bg, backend="gsplat")
    assert (cpu.image - gpu.image.cpu()).abs().max() < 2e-3
    assert (cpu.alpha - gpu.alpha.cpu()).abs().max() < 2e-3


def test_ssim_matches_a_windowed_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(20, 18, 3, generator=g), torch.rand(20, 18, 3, generator=g)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-5)
    # Direct windowed sums with zero padding.
    x = torch.arange(11.0) - 5
    w = torch.exp(-(x**2) / 4.5)
    w2 = torch.outer(w, w) / w.sum() ** 2
    pad = lambda t: torch.nn.functional.pad(t.permute(2, 0, 1), (5, 5, 5, 5))  # noqa: E731
    pa, pb = pad(a), pad(b)
    total = 0.0
    for i in range(20):
        for j in range(18):
            wa, wb = pa[:, i : i + 11, j : j + 11], pb[:, i : i + 11, j : j + 11]
            ma, mb = (wa * w2).sum((1, 2)), (wb * w2).sum((1, 2))
            va, vb = (wa * wa * w2).sum((1, 2)) - ma**2, (wb * wb * w2).sum((1, 2)) - mb**2
            cov = (wa * wb * w2).sum((1, 2)) - ma * mb
            s = ((2 * ma * mb + 1e-4) * (2 * cov + 9e-4)) / ((ma**2 + mb**2 + 1e-4) * (va + vb + 9e-4))
            total += float(s.sum())
    assert float(ssim(a, b)) == pytest.approx(total / (20 * 18 * 3), abs=1e-5)


# --- the .ply format -------------------------------------------------------------------------------


def small_avatar(n: int = 50, *, degree: int = 0) -> GaussianAvatar:
    means, quats, scales, colors, opacities = random_gaussians(n, seed=4)
    g = torch.Generator().manual_seed(5)
    bary = torch.rand(n, 3, generator=g)
    sh = torch.randn(n, (degree + 1) ** 2, 3, generator=g)
    binding = BodyBinding("anny", {"phenotype": torch.rand(1, 6, generator=g)}, canonical="big", max_offset=0.05)
    return GaussianAvatar(
        means=means, quats=quats, log_scales=scales.log(), opacity_logits=torch.logit(opacities), sh=sh,
        face_ids=torch.randint(0, 1000, (n,), generator=g), barycentric=bary / bary.sum(1, keepdim=True), binding=binding,
    )  # fmt: skip


def test_ply_round_trip_and_inria_layout(tmp_path):
    avatar = small_avatar(degree=1)
    path = save_avatar(tmp_path / "a.ply", avatar)
    header = path.read_bytes().split(b"end_header")[0].decode()
    props = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert props == splat_property_names(1) + ["face_id", "bary_0", "bary_1", "bary_2"]
    assert "format binary_little_endian 1.0" in header and "comment studio_avatar {" in header
    cols, _ = read_ply(path)
    # Stored in OpenCV axes (Y down, Z forward): studio's world turned 180 degrees about X.
    np.testing.assert_allclose(np.stack([cols["x"], -cols["y"], -cols["z"]], -1), avatar.means.numpy())
    R_file = quat_to_rotmat(torch.from_numpy(np.stack([cols[f"rot_{i}"] for i in range(4)], -1)))
    torch.testing.assert_close(R_file, torch.diag(torch.tensor([1.0, -1.0, -1.0])) @ quat_to_rotmat(avatar.quats), atol=1e-6, rtol=0)
    # f_rest is channel-major (the 3 red coefficients first, then green, then blue); the degree-1
    # basis (y, z, x) flips sign in y and z with the axes.
    np.testing.assert_allclose(cols["f_rest_0"], -avatar.sh[:, 1, 0].numpy())
    np.testing.assert_allclose(cols["f_rest_1"], -avatar.sh[:, 2, 0].numpy())
    np.testing.assert_allclose(cols["f_rest_2"], avatar.sh[:, 3, 0].numpy())
    np.testing.assert_allclose(cols["f_rest_3"], -avatar.sh[:, 1, 1].numpy())
    back = load_avatar(path)
    for f in ("means", "quats", "log_scales", "opacity_logits", "sh", "face_ids", "barycentric"):
        torch.testing.assert_close(getattr(back, f), getattr(avatar, f), msg=f)
    assert back.binding.body_model == "anny" and back.binding.canonical == "big" and back.binding.max_offset == 0.05
    torch.testing.assert_close(back.binding.shape["phenotype"], avatar.binding.shape["phenotype"])
    # Colour decodes as viewers decode it: 0.5 + C0 * f_dc.
    np.testing.assert_allclose(0.5 + SH_C0 * cols["f_dc_0"], (0.5 + SH_C0 * avatar.sh[:, 0, 0]).numpy(), rtol=1e-6)


def test_foreign_and_broken_plys_get_one_line(tmp_path):
    import trimesh

    mesh = tmp_path / "mesh.ply"
    trimesh.creation.box().export(mesh)
    splat = tmp_path / "splat.ply"
    a = small_avatar()
    write_ply(splat, splat_columns(a.means, a.sh, a.opacity_logits, a.log_scales, a.quats))
    good = save_avatar(tmp_path / "good.ply", a)
    cut = tmp_path / "cut.ply"
    cut.write_bytes(good.read_bytes()[:-100])
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    junk = tmp_path / "junk.ply"
    junk.write_bytes(b"\x00\x01 not a ply")
    damaged = tmp_path / "damaged.ply"
    damaged.write_bytes(good.read_bytes().replace(b'"format":"studio.gaussian_avatar"', b'"format":"studio.gaussian_avatar!"'))
    cases = {
        mesh: "not a 3D Gaussian splat", splat: "not a studio avatar", cut: "cut short", ascii_ply: "binary_little_endian",
        junk: "not a PLY file", damaged: "header is damaged",
    }  # fmt: skip
    for path, words in cases.items():
        with pytest.raises(StudioError) as error:
            load_avatar(path)
        assert words in str(error.value) and "\n" not in str(error.value) and str(path) in str(error.value)


def test_posed_splat_round_trips_its_covariances(tmp_path):
    from pipelines.gaussians.ply import save_splat

    a = small_avatar(30)
    covars = a.covariances() @ torch.diag(torch.tensor([1.2, 0.9, 1.1]))
    covars = 0.5 * (covars + covars.transpose(-1, -2))
    save_splat(tmp_path / "posed.ply", a.means, covars, a)
    cols, _ = read_ply(tmp_path / "posed.ply")
    quats = torch.from_numpy(np.stack([cols[f"rot_{i}"] for i in range(4)], -1))
    scales = torch.from_numpy(np.stack([cols[f"scale_{i}"] for i in range(3)], -1)).exp()
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # the file's axes
    torch.testing.assert_close(flip @ covariance(quats, scales) @ flip, covars, rtol=1e-3, atol=1e-6)


# --- binding and posing ----------------------------------------------------------------------------


def test_reposing_matches_the_body_models_lbs(anny, walk):
    """Gaussians at the body's vertices move exactly as the body model moves them, and their
    covariances by each vertex's blended transform."""
    from studio.body.skinning import body_skinning

    shape = {"phenotype": torch.tensor([[0.3, 0.6, 0.7, 0.4, 0.55, 0.5]])}
    params = {**{k: v[:4] for k, v in walk.body.items()}, "phenotype": shape["phenotype"].expand(4, -1)}
    binding = BodyBinding("anny", shape, canonical="big", max_offset=0.05)
    faces = anny.faces
    face_ids = torch.arange(0, faces.shape[0], 37)
    corner = torch.zeros(len(face_ids), 3)
    corner[:, 1] = 1.0  # the second corner of each triangle: a vertex of the body
    rig = GaussianRig(anny, binding, face_ids, corner)
    A, offsets = rig.frame_transforms(params)
    covars = covariance(torch.randn(len(face_ids), 4), torch.rand(len(face_ids), 3) * 0.01 + 0.001)
    expected = anny(params).vertices[:, faces[face_ids, 1]]
    skin = body_skinning(anny, params, canonical="big")
    for t in range(4):
        means, cov = pose_gaussians(rig.anchors(), covars, A[t], offsets[t])
        torch.testing.assert_close(means, expected[t], atol=2e-5, rtol=0)
        L = torch.einsum("nb,bij->nij", anny.skin_weights[faces[face_ids, 1]], skin.transforms[t, :, :3, :3])
        torch.testing.assert_close(cov, L @ covars @ L.transpose(-1, -2), atol=1e-9, rtol=1e-4)


def test_covariance_decomposition_round_trip():
    _, quats, scales, _, _ = random_gaussians(64, seed=6)
    covars = covariance(quats, scales)
    q2, s2 = decompose_covariance(covars)
    torch.testing.assert_close(covariance(q2, s2), covars, rtol=1e-4, atol=1e-8)
    assert torch.allclose(torch.linalg.det(quat_to_rotmat(q2)), torch.ones(64), atol=1e-5)


# --- the fit ---------------------------------------------------------------------------------------


def synthetic_scene(n: int = 400, *, views: int = 4, size: int = 48):
    """Target Gaussians (a blob), their renders from an orbit, and a perturbed start."""
    from studio.camera import orbit_cameras

    means, quats, scales, colors, opacities = random_gaussians(n, seed=7, depth=0.0, spread=0.25, size=0.04)
    cams = orbit_cameras([0.0, 0.0, 0.0], radius=2.5, image_size=(size, size), num_frames=views, focal=60.0)
    covars = covariance(quats, scales)
    images = torch.stack([render_gaussians(means, covars, colors, opacities, cams.extrinsics[v], cams.K[v], width=size, height=size).image for v in range(views)])
    alphas = torch.stack([render_gaussians(means, covars, colors, opacities, cams.extrinsics[v], cams.K[v], width=size, height=size).alpha for v in range(views)])
    binding = BodyBinding("anny", {}, max_offset=0.2)
    start = GaussianAvatar(
        means=means, quats=quats, log_scales=scales.log(), opacity_logits=torch.logit(opacities),
        sh=((torch.rand(n, 3, generator=torch.Generator().manual_seed(8)) - 0.5) / SH_C0)[:, None], face_ids=torch.zeros(n, dtype=torch.long),
        barycentric=torch.full((n, 3), 1 / 3), binding=binding,
    )  # fmt: skip
    target = Views(images=images / alphas.clamp_min(1e-6)[..., None] * (alphas[..., None] > 1e-6), masks=alphas, camera=cams)
    identity = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(n, 3, 4)
    return start, target, dict(anchors=means.clone(), transforms=identity, offsets=torch.zeros(n, 3)), colors


def test_fit_loss_falls_and_the_views_converge():
    start, views, rig, _ = synthetic_scene()
    settings = FitSettings(steps=40, camera_alignment=False, densify=False, lr_color=0.05, photo_share=0.0)
    fitted, report = fit_gaussians(start, orbit=views, photo=None, settings=settings, generator=torch.Generator().manual_seed(0), **rig)
    assert report["loss_last"] < 0.5 * report["loss_first"]

    def view_psnr(avatar: GaussianAvatar) -> float:
        E, K = views.camera.extrinsics[0], views.camera.K[0]
        out = render_gaussians(avatar.means, avatar.covariances(), avatar.colors(), avatar.opacities(), E, K, width=48, height=48)
        return psnr(out.image, views.images[0] * views.masks[0][..., None])

    assert view_psnr(fitted) > view_psnr(start) + 6.0


def test_camera_alignment_recovers_a_view_offset():
    """A view whose nominal camera is off by 3 cm sideways: the fit's correction moves towards the truth."""
    start, views, rig, colors = synthetic_scene(views=3)
    start = dataclasses.replace(start, sh=((colors - 0.5) / SH_C0)[:, None])  # the Gaussians are right
    E = views.camera.extrinsics.clone()
    E[1, 0, 3] += 0.03  # the camera of view 1 is wrong: camera-space x shifted
    wrong = dataclasses.replace(views, camera=Camera(K=views.camera.K, extrinsics=E, image_size=views.camera.image_size))
    settings = FitSettings(steps=45, camera_alignment=True, densify=False, lr_offset=0.0, lr_color=0.0, lr_opacity=0.0, lr_scale=0.0, lr_rotation=0.0, lr_camera=0.002, photo_share=0.0, ssim_weight=0.0)
    _, report = fit_gaussians(start, orbit=wrong, photo=None, settings=settings, generator=torch.Generator().manual_seed(1), **rig)
    correction = report["camera_corrections"]
    assert float(correction[1, 3]) < -0.01  # x translation corrected by more than a third, the right way
    assert float(correction[[0, 2], 3:].abs().max()) < 0.01


def test_densify_keeps_the_binding_and_prunes():
    start, views, rig, _ = synthetic_scene(n=60)
    state = _State(start, rig["anchors"], rig["transforms"], rig["offsets"], len(views))
    optimizer = torch.optim.Adam([state.raw_offset, state.quats, state.log_scales, state.opacity_logits, state.sh], lr=0.01)
    state.opacity_logits.data[:5] = -10.0  # transparent: pruned
    grad = torch.zeros(60)
    grad[10:20] = 10.0  # densified
    state.log_scales.data[10:15] = math.log(0.05)  # large: split
    state.log_scales.data[15:20] = math.log(0.001)  # small: cloned
    anchors_before = state.anchors.clone()
    _densify_and_prune(state, optimizer, grad, FitSettings(max_scale=0.03), torch.Generator().manual_seed(0))
    assert state.raw_offset.shape[0] == 60 - 5 - 5 + 10 + 5  # 5 pruned, 5 split into 10, 5 cloned
    children = state.anchors[-15:]
    parents = torch.cat([anchors_before[10:15], anchors_before[10:15], anchors_before[15:20]])
    torch.testing.assert_close(children, parents)  # children hang from their parents' anchors
    assert (state.means() - state.anchors).abs().max() <= state.max_offset
    assert all(p in optimizer.state or not optimizer.state for p in (state.raw_offset, state.sh))


# --- the pipeline ----------------------------------------------------------------------------------


class TestGaussiansContract(PipelineContract):
    @pytest.fixture
    def contract(self, synthetic, anny, tmp_path):
        image, mask, ref, motion, size = synthetic
        counter = iter(range(1000))

        def make_pipeline(config):
            return GaussianAvatarPipeline.load(None, dataclasses.replace(config, **TINY))

        def make_request(task, *, seed=0, **fields):
            if task == "avatar":
                base = dict(reference=image, reference_mask=mask, reference_condition=ref, body_model=anny, output=tmp_path / f"avatar{next(counter)}.ply", seed=seed)
                return AvatarRequest(**{**base, **fields})
            base = dict(reference=image, reference_mask=mask, reference_condition=ref, motion=motion, size=size, body_model=anny, seed=seed)
            return AnimateRequest(**{**base, **fields})

        return ContractCase(GaussianAvatarPipeline, make_pipeline, make_request)


def test_avatar_file_animates_and_matches_its_binding(synthetic, anny, tiny_avatar, tmp_path):
    image, mask, ref, motion, size = synthetic
    avatar = load_avatar(tiny_avatar)
    assert avatar.binding.body_model == "anny" and avatar.num_gaussians > 1000
    pipe = tiny_pipeline(avatar=tiny_avatar, background="white", export_frames=tmp_path / "frames")
    request = AnimateRequest(image, mask, ref, motion, size, anny, frame_offset=10)
    frames = pipe.animate(request).frames
    assert frames.shape == (3, *size, 3)
    import cv2

    body = motion.render(("mask",), body_model=anny)["mask"] > 0
    near = np.stack([cv2.dilate(b.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for b in body])
    assert (frames[~near] > 240).all(-1).mean() > 0.97 and (frames[body] < 200).any(-1).mean() > 0.5  # drawn where the body is
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_00010.ply", "frame_00011.ply", "frame_00012.ply"]
    cols, _ = read_ply(tmp_path / "frames" / "frame_00011.ply")
    assert len(cols["x"]) == avatar.num_gaussians and "face_id" not in cols


def test_animate_refuses_foreign_and_mismatched_avatars(synthetic, anny, tiny_avatar, tmp_path):
    image, mask, ref, motion, size = synthetic
    request = AnimateRequest(image, mask, ref, motion, size, anny)
    far = load_avatar(tiny_avatar)
    far = dataclasses.replace(far, means=far.means + torch.tensor([0.0, 1.0, 0.0]))  # not where its binding says
    moved = save_avatar(tmp_path / "moved.ply", far)
    other = save_avatar(tmp_path / "other.ply", dataclasses.replace(far, binding=dataclasses.replace(far.binding, body_model="smplx")))
    import trimesh

    mesh = tmp_path / "mesh.ply"
    trimesh.creation.icosphere().export(mesh)
    for path, words in ((moved, "does not match its binding"), (other, "bound to the 'smplx' body model"), (mesh, "not a 3D Gaussian splat"),
                        (tmp_path / "missing.ply", "no such file")):  # fmt: skip
        with pytest.raises(StudioError, match=words):
            tiny_pipeline(avatar=path).animate(request)
    # Refused before any work: a foreign file as the pipeline loads, a wrong binding as the job starts.
    with pytest.raises(StudioError, match="not a 3D Gaussian splat"):
        tiny_pipeline(avatar=mesh)
    pipe = tiny_pipeline(avatar=other)
    with pytest.raises(StudioError, match="bound to the 'smplx' body model"):
        pipe.start(AnimateRequest(image, None, None, None, size, anny))


def test_bad_settings_and_inputs(synthetic, anny, tmp_path):
    image, mask, ref, _, _ = synthetic
    for setting, words in (("steps=0", "steps must be 1-20000"), ("views=2", "views must be 4-64"), ("max_offset=1", "max_offset must be"), ("prior=nerf", "prior=")):
        with pytest.raises(StudioError, match=words):
            make_config(GaussianAvatarPipeline, [setting])
    out = tmp_path / "a.ply"
    with pytest.raises(StudioError, match="no person found"):
        tiny_pipeline().avatar(AvatarRequest(image, np.zeros_like(mask), ref, anny, out))
    assert not list(tmp_path.iterdir())  # nothing half-written
    with pytest.raises(StudioError, match=r"sv3d.*huggingface.co/stabilityai/sv3d"):
        GaussianAvatarPipeline.load(tmp_path, make_config(GaussianAvatarPipeline, ["prior=sv3d"]))
    with pytest.raises(StudioError, match="sv3d_checkpoint='../x.safetensors': give the name of a file"):
        GaussianAvatarPipeline.load(tmp_path, make_config(GaussianAvatarPipeline, ["prior=sv3d", "sv3d_checkpoint=../x.safetensors"]))
    (tmp_path / "file").write_text("")
    with pytest.raises(StudioError, match="export_frames=.*not a folder"):
        tiny_pipeline(export_frames=tmp_path / "file")
    ok, message = GaussianAvatarPipeline.weights_status(tmp_path)
    assert ok and "embedded" in message and str(tmp_path / "sv3d") in message


@pytest.mark.slow
def test_avatar_of_the_photo_report_and_progress(fitted, anny, tmp_path):
    """The real photo: the face fix repairs views, the silhouette lift adds Gaussians, progress rises."""
    image, ref, _, _ = fitted
    calls = []
    pipe = tiny_pipeline(steps=4, size=64, views=8, face_fix=True, preview_frames=2)
    result = pipe.avatar(AvatarRequest(image, ref.keypoints.mask[0], ref.condition, anny, tmp_path / "a.ply", on_progress=lambda d, t: calls.append((d, t))))
    assert result.preview.shape == (2, 128, 128, 3) and result.preview.dtype == np.uint8
    assert calls[-1][0] == calls[-1][1] and all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
    report = pipe.last_report
    assert report["views"] == 7  # the orbit view from the photo's side is left to the photo
    assert report["faces_repaired"] >= 1 and report["lifted"] > 0
    assert not report["camera_corrections"].any()  # the mesh prior's cameras are exact: never corrected


# --- SV3D: tiny random components in the released file layout --------------------------------------


def tiny_sv3d(variant: str = "p"):
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from pipelines.gaussians.sv3d import SV3DUNet

    torch.manual_seed(0)
    unet = SV3DUNet(
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), layers_per_block=1, cross_attention_dim=32,
        num_attention_heads=(1, 1), num_frames=21, camera_embed_dims=(256, 512, 512) if variant == "p" else (256,),
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=80, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
                                                          image_size=224, patch_size=32, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5))  # fmt: skip
    for module in (unet, vae, clip):  # random, not the zero-initialised mixers and projections
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return unet.eval(), vae.eval(), clip.eval()


def ldm_vae_name(key: str, levels: int) -> str:
    """The LDM name of a diffusers AutoencoderKL parameter (the inverse of diffusers' conversion)."""
    p = key.split(".")
    if p[1] == "down_blocks":
        if p[3] == "downsamplers":
            return f"encoder.down.{p[2]}.downsample.{'.'.join(p[5:])}"
        return f"encoder.down.{p[2]}.block.{p[4]}.{'.'.join(p[5:])}".replace("conv_shortcut", "nin_shortcut")
    if p[1] == "up_blocks":
        i = levels - 1 - int(p[2])
        if p[3] == "upsamplers":
            return f"decoder.up.{i}.upsample.{'.'.join(p[5:])}"
        return f"decoder.up.{i}.block.{p[4]}.{'.'.join(p[5:])}".replace("conv_shortcut", "nin_shortcut")
    if p[1] == "mid_block":
        if p[2] == "resnets":
            return f"{p[0]}.mid.block_{int(p[3]) + 1}.{'.'.join(p[4:])}"
        names = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
        return f"{p[0]}.mid.attn_1.{names[p[4]]}.{p[-1]}"
    return key.replace("conv_norm_out", "norm_out")


def write_sgm_checkpoint(path: Path, unet, vae, clip) -> Path:
    """Tiny components saved in generative-models' single-file layout (the sv3d_*.safetensors one)."""
    from safetensors.torch import save_file

    from pipelines.gaussians.sv3d import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, clip_key_map, unet_key_map

    out = {UNET_PREFIX + sgm: unet.state_dict()[k] for k, sgm in unet_key_map(unet).items()}
    for k, v in vae.state_dict().items():
        v = v[:, :, None, None] if ".attentions." in k and v.ndim == 2 else v  # LDM attention is 1x1 convolutions
        out[VAE_PREFIX + ldm_vae_name(k, len(vae.config.block_out_channels))] = v
    fused: dict[str, list] = {}
    sd = clip.state_dict()
    for hf, (oc, third) in clip_key_map(clip.config.num_hidden_layers).items():
        if third is None:
            out[CLIP_PREFIX + oc] = sd[hf].T.contiguous() if hf == "visual_projection.weight" else sd[hf]
        else:
            fused.setdefault(oc, [None] * 3)[third] = sd[hf]
    out.update({CLIP_PREFIX + oc: torch.cat(parts) for oc, parts in fused.items()})
    out["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)  # present in the release, unused by studio
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def sv3d_parts():
    return tiny_sv3d("p")


@pytest.fixture(scope="module")
def sv3d_dir(tmp_path_factory, sv3d_parts) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    (folder / "sv3d").mkdir()
    write_sgm_checkpoint(folder / "sv3d" / "sv3d_p.safetensors", *sv3d_parts)
    return folder


@pytest.mark.slow  # building the tiny SV3D checkpoint takes seconds
def test_sv3d_checkpoint_loads_into_identical_modules(sv3d_dir, sv3d_parts):
    from pipelines.gaussians.sv3d import load_checkpoint

    unet, vae, clip = sv3d_parts
    unet2, vae2, clip2 = load_checkpoint(sv3d_dir / "sv3d" / "sv3d_p.safetensors")
    assert unet2.config.camera_embed_dims == (256, 512, 512) and unet2.config.block_out_channels == (32, 64)
    x, t, ctx, vec = torch.randn(1, 3, 8, 4, 4), torch.tensor([0.3]), torch.randn(1, 1, 32), torch.rand(1, 3, 3)
    from studio.fit.fitter import one_torch_thread

    with torch.no_grad(), one_torch_thread():  # tiny tensors: one thread is faster on a busy machine
        torch.testing.assert_close(unet2(x, t, ctx, vec), unet(x, t, ctx, vec))
        image = torch.rand(1, 3, 32, 32) * 2 - 1
        torch.testing.assert_close(vae2.encode(image).latent_dist.mode(), vae.encode(image).latent_dist.mode())
        z = torch.randn(1, 4, 16, 16)
        torch.testing.assert_close(vae2.decode(z).sample, vae.decode(z).sample)
        pixels = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(clip2(pixel_values=pixels).image_embeds, clip(pixel_values=pixels).image_embeds)
    # The frame vector changes the prediction (the camera conditioning is wired in).
    with torch.no_grad():
        assert not torch.allclose(unet2(x, t, ctx, vec), unet2(x, t, ctx, vec.flip(1)))


@pytest.mark.slow  # building the tiny SV3D checkpoint takes seconds
def test_sv3d_checkpoint_errors_name_the_tensor(sv3d_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from pipelines.gaussians.sv3d import load_checkpoint

    sd = load_file(str(sv3d_dir / "sv3d" / "sv3d_p.safetensors"))
    missing = {k: v for k, v in sd.items() if k != "model.diffusion_model.out.2.weight"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(StudioError, match=r"no tensor 'out.2.weight'"):
        load_checkpoint(tmp_path / "missing.safetensors")
    wrong = dict(sd)
    wrong["model.diffusion_model.time_embed.2.weight"] = torch.zeros(3, 3)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(StudioError, match=r"'time_embedding.linear_2.weight' \(UNet\) has shape \[3, 3\]"):
        load_checkpoint(tmp_path / "wrong.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(StudioError, match="not a readable .safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")


@pytest.mark.slow
def test_sv3d_prior_generates_an_orbit(synthetic, anny, sv3d_dir):
    from pipelines.gaussians.prior import PriorContext
    from pipelines.gaussians.sv3d import SV3DPrior, triangle_scales

    image, mask, ref, _, _ = synthetic
    prior = SV3DPrior.from_checkpoint(sv3d_dir / "sv3d" / "sv3d_p.safetensors", steps=2, resolution=64)
    context = PriorContext(image, mask, ref, anny, texture=None)
    cameras = prior.cameras(context, num_views=12, size=48)
    assert len(cameras) == 21 and cameras.image_size == (48, 48)
    calls = []
    views = prior.generate(context, cameras, on_progress=lambda d, t: calls.append(d))
    assert views.images.shape == (21, 48, 48, 3) and views.masks.shape == (21, 48, 48) and calls == [1, 2]
    assert torch.isfinite(views.images).all()
    inp = prior.input_image(context)
    assert inp.shape == (64, 64, 3) and inp[0, 0].min() == 1.0  # the person on white
    torch.testing.assert_close(triangle_scales(5, 3.0), torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0]))


@pytest.mark.slow
def test_sv3d_u_loads(tmp_path):
    from pipelines.gaussians.sv3d import load_checkpoint

    parts = tiny_sv3d("u")
    unet, _, _ = load_checkpoint(write_sgm_checkpoint(tmp_path / "sv3d_u.safetensors", *parts))
    assert unet.config.camera_embed_dims == (256,)
    x, t, ctx, vec = torch.randn(1, 21, 8, 4, 4), torch.tensor([0.3]), torch.randn(1, 1, 32), torch.rand(1, 21, 1)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t, ctx, vec), parts[0](x, t, ctx, vec))


@pytest.mark.slow
def test_avatar_with_the_sv3d_prior(fitted, anny, sv3d_dir, tmp_path):
    image, ref, _, _ = fitted
    pipe = GaussianAvatarPipeline.load(sv3d_dir, make_config(GaussianAvatarPipeline, {**TINY, "steps": 10, "prior": "sv3d", "sv3d_steps": 1, "sv3d_resolution": 64}))
    result = pipe.avatar(AvatarRequest(image, ref.keypoints.mask[0], ref.condition, anny, tmp_path / "a.ply"))
    assert load_avatar(result.path).num_gaussians > 1000 and pipe.last_report["prior"] == "sv3d"
    assert pipe.last_report["camera_corrections"].abs().sum() > 0  # generated views: their cameras are aligned


# --- slow: the commands and the web demo -----------------------------------------------------------


@pytest.mark.slow
def test_studio_avatar_and_animate_commands(tmp_path):
    import subprocess
    import sys

    studio = Path(sys.executable).with_name("studio")
    out = tmp_path / "avatar.ply"
    run = subprocess.run([str(studio), "avatar", str(ASSETS / "media" / "ref_sitting.jpg"), "-o", str(out), "--preview", str(tmp_path / "orbit.mp4"),
                          "--set", "steps=20", "--set", "gaussians=8000"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert load_avatar(out).num_gaussians > 8000 and (tmp_path / "orbit.mp4").stat().st_size > 1000
    assert json.loads((tmp_path / "avatar.json").read_text())["backend"] == "gaussians"
    video = tmp_path / "run.mp4"
    run = subprocess.run([str(studio), "animate", str(ASSETS / "media" / "ref_sitting.jpg"), str(ASSETS / "media" / "cmu_02_03_run.bvh"), "-o", str(video),
                          "--backend", "gaussians", "--set", f"avatar={out}", "--size", "256"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert video.stat().st_size > 10_000
    bad = tmp_path / "bad.ply"
    bad.write_text("ply\nformat ascii 1.0\nend_header\n")
    run = subprocess.run([str(studio), "animate", str(ASSETS / "media" / "ref_sitting.jpg"), str(ASSETS / "media" / "cmu_02_03_run.bvh"), "-o", str(tmp_path / "x.mp4"),
                          "--backend", "gaussians", "--set", f"avatar={bad}"], capture_output=True, text=True)  # fmt: skip
    assert run.returncode != 0 and "binary_little_endian" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.slow
def test_gradio_avatar_job(tmp_path, monkeypatch):
    import types

    import gradio_app

    monkeypatch.setattr(gradio_app, "WORK", tmp_path / "work")
    model, orbit, notes = gradio_app.run_avatar_job(
        str(ASSETS / "media" / "ref_sitting.jpg"), "gaussians", types.SimpleNamespace(session_hash="s"), progress=lambda *a, **k: None,
        settings={"steps": 10, "gaussians": 5000},
    )  # fmt: skip
    assert Path(model).suffix == ".ply" and load_avatar(model).num_gaussians > 5000
    assert Path(orbit).stat().st_size > 1000 and "gaussians" in notes


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it with apt where it can)")
def test_avatar_in_a_real_browser(served_app):  # noqa: F811
    """The Avatar tab: its example, the button, the .ply shown by Model3D (a screenshot is kept)."""
    from playwright.sync_api import sync_playwright

    url, tmp = served_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Avatar").click()
        page.wait_for_selector("#avatar-button", timeout=60_000)
        page.locator(".gallery-item:visible").first.click()  # the tab's example photo
        page.wait_for_timeout(1500)
        page.click("#avatar-button")
        page.wait_for_selector("#avatar-model canvas", timeout=600_000)
        page.wait_for_timeout(8000)  # the splat viewer loads the file and draws
        shot = Path(os.environ.get("STUDIO_TEST_SCREENSHOTS", tmp)) / "avatar_model3d.png"  # set it to keep the picture
        page.locator("#avatar-model").screenshot(path=str(shot))
        from PIL import Image

        picture = np.asarray(Image.open(shot).convert("RGB"), np.float32)
        h, w, _ = picture.shape
        assert picture[h // 5 : h - h // 10, w // 5 : w - w // 5].std() > 10  # the splats are drawn (an empty viewer is flat)
        assert "Traceback" not in page.content()
        browser.close()
