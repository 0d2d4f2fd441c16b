"""Video to motion, end to end: decode, MediaPipe tracking, body fitting, to a HumanCondition.

Runs `studio.capture.pose_video` (what `studio pose VIDEO` calls) on ../shared/media/motion_dribble.mp4,
or on the bundled copy in assets/media when ../shared is absent. The body model and the estimator are
loaded once beforehand and one warm-up run builds MediaPipe's graphs, as in a long-running app; the
cold figure (graphs built inside the timed run) is printed too. Prints figures; the last line is
`pose_fps=<frames per second>` for body-only fitting.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from studio.body import load_body_model
from studio.capture import pose_video
from studio.pose import load_estimator

ROOT = Path(__file__).resolve().parents[1]


def default_video() -> Path:
    shared = ROOT.parent / "shared" / "media" / "motion_dribble.mp4"
    return shared if shared.is_file() else ROOT / "assets" / "media" / "motion_dribble.mp4"


def timed(video: Path, model, estimator, runs: int) -> tuple[float, int]:
    best = float("inf")
    frames = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = pose_video(video, body_model=model, estimator=estimator)
        best = min(best, time.perf_counter() - start)
        frames = result.condition.num_frames
    return best, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, default=default_video())
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the best is reported")
    args = parser.parse_args()
    print(f"video: {args.video}")
    print(f"cpu cores: {os.cpu_count()}")
    model = load_body_model("anny")

    cold_estimator = load_estimator()
    cold, frames = timed(args.video, model, cold_estimator, 1)
    print(f"body only, cold (MediaPipe graphs built in the run): {frames} frames in {cold:.2f} s = {frames / cold:.1f} frames/s")

    hands_estimator = load_estimator(hands=True, face=True)
    timed(args.video, model, hands_estimator, 1)
    seconds, frames = timed(args.video, model, hands_estimator, args.runs)
    print(f"with hands and face (holistic), warm: {frames} frames in {seconds:.2f} s = {frames / seconds:.1f} frames/s")

    estimator = load_estimator()
    timed(args.video, model, estimator, 1)
    seconds, frames = timed(args.video, model, estimator, args.runs)
    print(f"body only, warm: {frames} frames in {seconds:.2f} s = {frames / seconds:.1f} frames/s")
    print(f"pose_fps={frames / seconds:.1f}")


if __name__ == "__main__":
    main()
