"""Gaussian avatar benchmark: `studio avatar` time at defaults, CPU rendering speed, and fit quality.

    .venv/bin/python benchmarks/gaussian_avatar.py [--runs 3] [--set key=value ...] [--skip-cli]

Figures (the last lines, KEY=value):
- ``avatar_s``: wall time (``avatar_cpu_s``: CPU time, both cores) of ``studio avatar assets/media/ref_sitting.jpg -o avatar.ply`` at the
  defaults (the whole command: start-up, reference fit, prior, Gaussian fit, writing), median of
  ``--runs`` runs after one warm-up run (which compiles and caches the numba kernels);
- ``gs_render_fps``: frames per second of the CPU rasteriser (projection, binning, compositing) for
  50,000 Gaussians (the avatar's, repeated) at 512x512, posed and seen from the photo's side;
- ``ref_psnr_db``: the fitted avatar rendered from the photo's camera against the photo, inside the
  person mask (at the fit's resolution: the photo view's longer side is ``size`` pixels);
- ``orbit_psnr_db``: the avatar against held-out views of the prior (the orbit shifted by half a step,
  so none was used in the fit), inside the prior's person coverage (``orbit_fit_psnr_db``: the same
  against the views the fit used, after their face fix).
When a CUDA GPU is present, ``gsplat_render_fps`` and ``cpu_gsplat_max_diff`` are added.

The machine may be shared with other work: the script reports the load average at its start and end,
and the CPU time of each `studio avatar` run beside its wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ANNY_CACHE_DIR", os.path.expanduser("~/.cache/studio/anny"))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = ROOT / "assets" / "media" / "ref_sitting.jpg"


def time_cli(runs: int, folder: Path, settings: list[str]) -> tuple[list[float], list[float]]:
    """Wall times and CPU times (user + system) of `studio avatar` (a warm-up run first, not counted)."""
    import resource

    studio = Path(sys.executable).with_name("studio")
    times, cpu = [], []
    for i in range(runs + 1):
        cmd = [str(studio), "avatar", str(REFERENCE), "-o", str(folder / f"avatar{i}.ply"), *[a for s in settings for a in ("--set", s)]]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i:
            times.append(time.perf_counter() - start)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return times, cpu


def quality_and_speed(settings: list[str]) -> dict[str, float]:
    import numpy as np
    import torch

    from studio.native_logs import filter_native_stderr

    filter_native_stderr(keep_python_stderr=True)  # MediaPipe's native log lines would bury the figures

    from pipelines.gaussians import GaussianAvatarPipeline
    from pipelines.gaussians.avatar import GaussianRig, pose_gaussians
    from pipelines.gaussians.fit import psnr
    from pipelines.gaussians.prior import orbit
    from pipelines.gaussians.raster import render_gaussians
    from studio.body import load_body_model
    from studio.pipeline import make_config
    from studio.tasks import fit_photo

    body_model = load_body_model()
    image, ref, _ = fit_photo(REFERENCE, body_model)
    pipe = GaussianAvatarPipeline.load(None, make_config(GaussianAvatarPipeline, settings))
    cfg = pipe.config
    avatar = pipe.build(image, ref.keypoints.mask[0], ref.condition, body_model, seed=0)
    report = pipe.last_report
    rig = GaussianRig(body_model, avatar.binding, avatar.face_ids, avatar.barycentric)
    A, offsets = rig.frame_transforms(ref.condition.body)
    with torch.no_grad():
        means, covars = pose_gaussians(avatar.means, avatar.covariances(), A[0], offsets[0])
    colors, opacities = avatar.colors(), avatar.opacities()

    def render(camera, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = camera.image_size
        with torch.no_grad():
            out = render_gaussians(means, covars, colors, opacities, camera.extrinsics[t], camera.K[t], width=w, height=h, background=torch.ones(3))
        return out.image, out.alpha

    photo = report["photo_view"]
    image_p, _ = render(photo.camera, 0)
    mask = photo.masks[0]
    target = photo.images[0] * mask[..., None] + (1 - mask[..., None])
    figures = {"ref_psnr_db": psnr(image_p, target, mask)}
    cameras = orbit(report["context"], num_views=cfg.views, size=cfg.size, azimuth_offset=0.5, elevations=pipe.prior.elevations)

    def orbit_psnr(views) -> float:
        scores = []
        for t in range(len(views)):
            rendered, _ = render(views.camera, t)
            m = views.masks[t]
            scores.append(psnr(rendered, views.images[t] * m[..., None] + (1 - m[..., None]), m))
        return float(np.mean(scores))

    figures["orbit_fit_psnr_db"] = orbit_psnr(report["orbit_views"])  # the views the fit used (for comparison)
    figures["orbit_psnr_db"] = orbit_psnr(pipe.prior.generate(report["context"], cameras))
    figures["gaussians"] = avatar.num_gaussians
    figures["fit_loss_first"], figures["fit_loss_last"] = report["loss_first"], report["loss_last"]

    # Rendering speed: 50,000 Gaussians (the avatar's, repeated as needed) at 512x512.
    index = torch.arange(max(50_000, avatar.num_gaussians)) % avatar.num_gaussians
    big = [x[index] for x in (means, covars, colors, opacities)]
    cams = orbit(report["context"], num_views=12, size=512)
    times = []
    from studio.fit.fitter import one_torch_thread

    with torch.no_grad(), one_torch_thread():  # as the pipeline renders (see pipelines/gaussians/raster.py)
        for t in range(len(cams)):
            start = time.perf_counter()
            render_gaussians(*big, cams.extrinsics[t], cams.K[t], width=512, height=512)
            times.append(time.perf_counter() - start)
    figures["render_gaussians"] = big[0].shape[0]
    figures["gs_render_fps"] = 1.0 / statistics.median(times[2:])
    if torch.cuda.is_available():
        from pipelines.gaussians.raster import render_gaussians as rg

        cpu = rg(*big, cams.extrinsics[0], cams.K[0], width=512, height=512).image
        gpu = rg(*big, cams.extrinsics[0], cams.K[0], width=512, height=512, backend="gsplat").image.cpu()
        figures["cpu_gsplat_max_diff"] = float((cpu - gpu).abs().max())
        torch.cuda.synchronize()
        start = time.perf_counter()
        for t in range(len(cams)):
            rg(*big, cams.extrinsics[t], cams.K[t], width=512, height=512, backend="gsplat")
        torch.cuda.synchronize()
        figures["gsplat_render_fps"] = len(cams) / (time.perf_counter() - start)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of `studio avatar` (after a warm-up run)")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="pipeline settings (key=value) for every figure")
    parser.add_argument("--skip-cli", action="store_true", help="skip the `studio avatar` timing")
    args = parser.parse_args()
    figures: dict[str, float] = {"load_average_1min": os.getloadavg()[0]}
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as tmp:
            times, cpu = time_cli(args.runs, Path(tmp), args.settings)
        figures["avatar_runs_s"] = " ".join(f"{t:.1f}" for t in times)
        figures["avatar_cpu_s"] = statistics.median(cpu)  # both cores' seconds: a busy machine stretches the wall time, not this
        figures["avatar_s"] = statistics.median(times)
    figures.update(quality_and_speed(args.settings))
    figures["load_average_1min_end"] = os.getloadavg()[0]
    for key, value in figures.items():
        print(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}")


if __name__ == "__main__":
    main()
