"""`studio animate` with the embedded mesh backend, end to end but for the driving video's pose.

Reference: assets/media/ref_sitting.jpg. Motion: the 40-frame dribble clip, estimated and fitted
beforehand (that time is excluded, as the issue asks), saved as a motion .npz. Timed: fitting the
reference, building the textured avatar and background, motion transfer, rendering every frame at
512 (longer side) and encoding the mp4. Two cases, each the best of `--runs`:
- cold: a reference never seen (an empty avatar cache, so the fit, the inpainting and the texture are
  all done);
- warm: the same reference again (its fit, background and texture come from the avatar cache,
  `studio.animate.cache`), the case of animating one photo with many motions.
Prints the stage breakdown (wall seconds, and the CPU seconds of all threads and of ffmpeg) for each;
the last lines are `animate_cold_fps=` and `animate_fps=` (warm). The machine may be shared: run it
more than once and look at the CPU figures too.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from studio.animate import AnimateConfig, animate
from studio.body import load_body_model
from studio.capture import pose_video

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_run(reference: Path, motion: Path, output: Path, size: int, model) -> tuple[float, float, dict[str, float], int]:
    marks: list[tuple[str, float]] = []
    cpu, start = cpu_seconds(), time.perf_counter()
    result = animate(
        reference, motion, output, config=AnimateConfig(size=size), body_model=model,
        on_stage=lambda name, total: marks.append((name, time.perf_counter())),
    )  # fmt: skip
    total = time.perf_counter() - start
    edges = marks + [("end", start + total)]
    stages = {name: edges[i + 1][1] - t for i, (name, t) in enumerate(marks)}
    return total, cpu_seconds() - cpu, stages, result.num_frames


def report(label: str, best: tuple[float, float, dict[str, float], int], size: int) -> float:
    total, cpu, stages, frames = best
    print(f"{label}: {frames} frames at {size} in {total:.2f} s ({cpu:.2f} CPU s) = {frames / total:.1f} frames/s")
    for name, seconds in stages.items():
        print(f"  {name}: {seconds:.2f} s")
    return frames / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=ROOT / "assets/media/ref_sitting.jpg")
    parser.add_argument("--video", type=Path, default=ROOT / "assets/media/motion_dribble.mp4")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=2, help="timed runs of each case; the best is reported")
    args = parser.parse_args()
    model = load_body_model("anny")
    print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        motion = tmp / "motion.npz"
        pose_video(args.video, body_model=model).condition.save(motion, body_model=model)
        cold, warm = [], []
        for run in range(args.runs):
            os.environ["STUDIO_CACHE_DIR"] = str(tmp / f"cache{run}")  # empty: nothing cached
            cold.append(timed_run(args.reference, motion, tmp / f"cold{run}.mp4", args.size, model))
            warm.append(timed_run(args.reference, motion, tmp / f"warm{run}.mp4", args.size, model))
        cold_fps = report("cold (reference never seen)", min(cold, key=lambda r: r[0]), args.size)
        warm_fps = report("warm (reference's fit and avatar cached)", min(warm, key=lambda r: r[0]), args.size)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"animate_cold_fps={cold_fps:.1f}")
    print(f"animate_fps={warm_fps:.1f}")


if __name__ == "__main__":
    main()
