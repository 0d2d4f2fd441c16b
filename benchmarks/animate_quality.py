"""Self-reenactment quality of ``studio animate``, scored the way human-animation papers score it.

The first frame of a real video is the reference photo, the video's own motion drives it, and the
generated frames are compared with the real ones (Champ reports SSIM 0.802, PSNR* 29.9 dB and LPIPS
0.234 on TikTok videos this way). Figures, averaged over frames and clips:
- ``reenact_ssim`` / ``reenact_psnr_db``: whole frames (grey-level SSIM, Gaussian 11x11 window,
  sigma 1.5, as Wang et al.; PSNR over RGB);
- ``reenact_person_ssim`` / ``reenact_person_psnr_db``: inside the real person's box (from the
  pose estimator's landmarks on the real frame, padded for the head and feet);
- ``reenact_lpips`` only when the ``lpips`` package and its weights are present locally (never
  downloaded).

Clips: the bundled dribble, the bundled two-people clip (following its larger person, as ``studio
animate`` does), and any video given with ``--video``. ``--baseline`` also runs the code of a git
revision (default HEAD, the version before uncommitted changes) from a temporary ``git worktree``
in /tmp, in a subprocess, so both sets of figures come from the same run; the worktree is removed
afterwards. With ``--strips DIR``, frame strips (real above generated) go there, and so do strips of
the bundled sitting photo driven by the dribble and by the CMU run, and of the held-ball photo
driven by the run (``*_after.png``; ``*_before.png`` from the baseline).

    .venv/bin/python benchmarks/animate_quality.py --baseline --strips outputs/animate_quality
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIPS = {"dribble": ROOT / "assets/media/motion_dribble.mp4", "two_people": ROOT / "assets/media/motion_two_people.mp4"}


# --- generation (runs with whichever studio code is first on sys.path) ----------------------------


def generate(video: Path, workdir: Path, *, frames: int, size: int) -> dict:
    """Write the reference (first frame) and the driving clip (first ``frames`` frames) to
    ``workdir``, run ``studio animate`` on them and return the output path and notes."""
    from studio.animate import AnimateConfig, animate
    from studio.body import load_body_model
    from studio.media import VideoReader, VideoWriter, video_info, write_image

    workdir.mkdir(parents=True, exist_ok=True)
    fps = video_info(video).fps
    real = []
    for frame in VideoReader(video):
        real.append(frame)
        if len(real) == frames:
            break
    ref = write_image(workdir / "reference.png", real[0])
    clip = workdir / "clip.mp4"
    with VideoWriter(clip, fps=fps) as writer:
        for frame in real:
            writer.write(frame)
    out = workdir / "generated.mp4"
    start = time.perf_counter()
    result = animate(ref, clip, out, config=AnimateConfig(size=size), body_model=load_body_model("anny"))
    return {"output": str(out), "clip": str(clip), "notes": result.notes, "seconds": time.perf_counter() - start}


def animate_photo(photo: Path, motion: Path, workdir: Path, *, size: int) -> dict:
    """``studio animate`` of a photo with a motion (for the frame strips): the output path and notes."""
    from studio.animate import AnimateConfig, animate
    from studio.body import load_body_model

    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "generated.mp4"
    result = animate(photo, motion, out, config=AnimateConfig(size=size), body_model=load_body_model("anny"))
    return {"output": str(out), "notes": result.notes}


def _generate_all(args) -> None:
    """The ``--generate`` entry point used for the baseline subprocess: JSON on stdout's last line."""
    results = {name: generate(Path(video), Path(args.workdir) / name, frames=args.frames, size=args.size) for name, video in args.clip}
    for name, photo, motion in args.photo:
        results[f"photo:{name}"] = animate_photo(Path(photo), Path(motion), Path(args.workdir) / name, size=args.size)
    print(json.dumps(results))


# --- scoring ---------------------------------------------------------------------------------------


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two [H, W, 3] uint8 images on their grey levels (Wang et al. 2004 constants)."""
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(img):
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images over all channels."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def person_boxes(frames: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of the followed (largest) person in each frame, from the pose landmarks,
    padded by 12% of the height above (head top) and 5% around; the whole frame when nobody is found."""
    from studio.pose import load_estimator

    estimator = load_estimator()
    boxes = []
    try:
        for kp in estimator.estimate_video(iter(frames), fps=12.0):
            for t in range(len(kp)):
                h, w = frames[len(boxes)].shape[:2]
                seen = kp.confidence[t] > 0.5
                if seen.sum() < 4:
                    boxes.append((0, 0, w, h))
                    continue
                pts = kp.points[t][seen]
                (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
                tall = y1 - y0
                box = (x0 - 0.05 * tall, y0 - 0.12 * tall, x1 + 0.05 * tall, y1 + 0.05 * tall)
                boxes.append((max(0, int(box[0])), max(0, int(box[1])), min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))))
    finally:
        getattr(estimator, "close", lambda: None)()
    return boxes


def _lpips_model():
    """An LPIPS (AlexNet) model when the ``lpips`` package and torchvision's AlexNet weights are already
    on this machine (torch's hub cache), else None: nothing is downloaded."""
    import importlib.util

    if importlib.util.find_spec("lpips") is None:
        return None
    import torch

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(hub.glob("alexnet-*.pth")):
        return None
    import lpips

    return lpips.LPIPS(net="alex", verbose=False)


def score(generated: Path, clip: Path, boxes: list[tuple[int, int, int, int]] | None = None, *, lpips_model=None) -> dict:
    """Per-clip means of the figures; ``boxes`` are the real person's boxes in the clip's pixels."""
    from studio.media import VideoReader

    gen = list(VideoReader(generated))
    real = list(VideoReader(clip))[: len(gen)]
    boxes = boxes or person_boxes(real)
    h, w = gen[0].shape[:2]
    figures: dict[str, list[float]] = {"ssim": [], "psnr_db": [], "person_ssim": [], "person_psnr_db": [], "lpips": []}
    for g, r, (x0, y0, x1, y1) in zip(gen, real, boxes):
        sy, sx = h / r.shape[0], w / r.shape[1]
        r = cv2.resize(r, (w, h), interpolation=cv2.INTER_AREA)
        figures["ssim"].append(ssim(g, r))
        figures["psnr_db"].append(psnr(g, r))
        bx0, by0, bx1, by1 = int(x0 * sx), int(y0 * sy), max(int(x0 * sx) + 8, int(np.ceil(x1 * sx))), max(int(y0 * sy) + 8, int(np.ceil(y1 * sy)))
        figures["person_ssim"].append(ssim(g[by0:by1, bx0:bx1], r[by0:by1, bx0:bx1]))
        figures["person_psnr_db"].append(psnr(g[by0:by1, bx0:bx1], r[by0:by1, bx0:bx1]))
        if lpips_model is not None:
            import torch

            def tensor(img):
                return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1

            with torch.no_grad():
                figures["lpips"].append(float(lpips_model(tensor(g), tensor(r))))
    return {k: float(np.mean(v)) for k, v in figures.items() if v} | {"frames": len(gen)}


PHOTO_STRIPS = {  # name: (photo, motion), looked at before and after
    "sitting_dribble": ("assets/media/ref_sitting.jpg", "assets/media/motion_dribble.mp4"),
    "sitting_run": ("assets/media/ref_sitting.jpg", "assets/media/cmu_02_03_run.bvh"),
    "held_ball_run": ("assets/media/ref_held_ball.jpg", "assets/media/cmu_02_03_run.bvh"),
}


def photo_strip(generated: Path, path: Path, *, count: int = 8) -> None:
    """A PNG of ``count`` evenly spaced frames of an animation."""
    from studio.media import VideoReader, write_image

    frames = list(VideoReader(generated))
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.concatenate([frames[i] for i in picks], 1))


def strip(generated: Path, clip: Path, path: Path, *, count: int = 6) -> None:
    """A PNG with ``count`` evenly spaced frames: real on top, generated below."""
    from studio.media import VideoReader, write_image

    gen = list(VideoReader(generated))
    real = list(VideoReader(clip))[: len(gen)]
    picks = np.linspace(0, len(gen) - 1, count).round().astype(int)
    h, w = gen[0].shape[:2]
    top = np.concatenate([cv2.resize(real[i], (w, h), interpolation=cv2.INTER_AREA) for i in picks], 1)
    bottom = np.concatenate([gen[i] for i in picks], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, np.concatenate([top, bottom], 0))


# --- the old code, from a temporary worktree ---------------------------------------------------


def run_baseline(revision: str, clips: list[tuple[str, str]], photos: list[tuple[str, str, str]], *, frames: int, size: int, workdir: Path) -> dict:
    """Generate with the studio code of ``revision`` (a detached ``git worktree`` in /tmp, removed
    afterwards) in a subprocess that imports it first; the cache is off so nothing is shared."""
    tree = Path(tempfile.mkdtemp(prefix="studio_baseline_"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), revision], check=True, capture_output=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree), "STUDIO_NO_CACHE": "1"}
        cmd = [sys.executable, __file__, "--generate", "--workdir", str(workdir), "--frames", str(frames), "--size", str(size)]
        for name, video in clips:
            cmd += ["--clip", name, video]
        for name, photo, motion in photos:
            cmd += ["--photo", name, photo, motion]
        done = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", action="append", default=[], help="another driving video (its first frame is the reference)")
    parser.add_argument("--frames", type=int, default=40, help="frames per clip (from the start)")
    parser.add_argument("--size", type=int, default=512, help="output's longer side")
    parser.add_argument("--only", choices=sorted(CLIPS), action="append", help="score only these bundled clips")
    parser.add_argument("--baseline", nargs="?", const="HEAD", default=None, help="also score this git revision's code (default HEAD)")
    parser.add_argument("--strips", type=Path, default=None, help="folder for real-vs-generated PNG strips")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--clip", nargs=2, action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--photo", nargs=3, action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        _generate_all(args)
        return

    import logging

    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("STUDIO_NO_CACHE", "1")  # the new code pays for its fit like the old one
    clips = [(name, str(CLIPS[name])) for name in (args.only or list(CLIPS))]
    clips += [(Path(v).stem, str(Path(v).resolve())) for v in args.video]
    photos = [(name, str(ROOT / p), str(ROOT / m)) for name, (p, m) in PHOTO_STRIPS.items()] if args.strips is not None else []
    lpips_model = _lpips_model()
    work = Path(tempfile.mkdtemp(prefix="animate_quality_"))
    runs = {"new": {name: generate(Path(video), work / "new" / name, frames=args.frames, size=args.size) for name, video in clips}}
    for name, photo, motion in photos:
        runs["new"][f"photo:{name}"] = animate_photo(Path(photo), Path(motion), work / "new" / name, size=args.size)
    if args.baseline:
        runs["old"] = run_baseline(args.baseline, clips, photos, frames=args.frames, size=args.size, workdir=work / "old")
    results: dict[str, dict[str, dict]] = {}
    for version, generated in runs.items():
        for name, info in generated.items():
            if name.startswith("photo:"):
                name = name.split(":", 1)[1]
                print(f"{version} {name} notes: {info['notes']}", flush=True)
                photo_strip(Path(info["output"]), args.strips / f"{name}_{'after' if version == 'new' else 'before'}.png")
                continue
            boxes = results.get("_boxes", {}).get(name)
            if boxes is None:
                from studio.media import VideoReader

                boxes = person_boxes(list(VideoReader(info["clip"])))
                results.setdefault("_boxes", {})[name] = boxes
            results.setdefault(version, {})[name] = score(Path(info["output"]), Path(info["clip"]), boxes, lpips_model=lpips_model)
            results[version][name]["seconds"] = info["seconds"]
            print(f"{version} {name}: " + " ".join(f"{k}={v:.4g}" for k, v in results[version][name].items()), flush=True)
            print(f"  notes: {info['notes']}", flush=True)
            if args.strips is not None:
                strip(Path(info["output"]), Path(info["clip"]), args.strips / f"reenact_{name}_{'after' if version == 'new' else 'before'}.png")
    if lpips_model is None:
        print("reenact_lpips: not measured (the lpips package or torchvision's AlexNet weights are not on this machine)")
    for version in [v for v in ("old", "new") if v in results]:
        for name, figures in results[version].items():
            prefix = "baseline_" if version == "old" else ""
            for key in ("ssim", "psnr_db", "person_ssim", "person_psnr_db", "lpips"):
                if key in figures:
                    print(f"{prefix}reenact_{key}_{name}={figures[key]:.4f}")
    for version in [v for v in ("old", "new") if v in results]:
        prefix = "baseline_" if version == "old" else ""
        for key in ("ssim", "psnr_db", "person_ssim", "person_psnr_db", "lpips"):
            values = [f[key] for f in results[version].values() if key in f]
            if values:
                print(f"{prefix}reenact_{key}={np.mean(values):.4f}")
    print(f"frames_per_clip={args.frames}")


if __name__ == "__main__":
    main()
