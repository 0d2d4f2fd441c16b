"""Video to motion, end to end: decode, MediaPipe tracking, body fitting, smoothing, to a HumanCondition.

Runs `studio.capture.pose_video` (what `studio pose VIDEO` calls) on ../shared/media/motion_dribble.mp4,
or on the bundled copy in assets/media when ../shared is absent. The body model and the estimators are
loaded once beforehand and one warm-up run builds MediaPipe's graphs, as in a long-running app; the
cold figure (graphs built inside the timed run) is printed too. In the same run:
- `mediapipe_only_fps=`: decoding and tracking alone (no fitting), body model only;
- `pose_fps=`: the whole job, body only; `pose_hands_fps=`: with hands and face (holistic);
- the jitter the temporal smoother removes: mean joint acceleration (m/s^2) of the 22 body joints
  without and with the smoother (`jitter_reduction=`, a fraction).
Each figure is the best of `--runs`; the machine may be shared, so run it more than once. The CPU time
per frame (this process's threads and ffmpeg) is printed too: it does not depend on what else runs,
and two free cores can at best run 2000 / (CPU ms per frame) frames a second.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from studio.body import load_body_model
from studio.capture import WORKING_SIDE, pose_video
from studio.fit import FitConfig
from studio.fit.smoothing import joint_acceleration
from studio.media import VideoReader
from studio.pose import load_estimator

ROOT = Path(__file__).resolve().parents[1]


def default_video() -> Path:
    shared = ROOT.parent / "shared" / "media" / "motion_dribble.mp4"
    return shared if shared.is_file() else ROOT / "assets" / "media" / "motion_dribble.mp4"


def cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(video: Path, model, estimator, runs: int, config: FitConfig | None = None):
    """Best wall time of ``runs`` runs, the last result, and the least CPU time a run took."""
    best, cpu, result = float("inf"), float("inf"), None
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), cpu_seconds()
        result = pose_video(video, body_model=model, estimator=estimator, config=config)
        best = min(best, time.perf_counter() - start)
        cpu = min(cpu, cpu_seconds() - start_cpu)
    return best, result, cpu


def mediapipe_only(video: Path, estimator, runs: int) -> tuple[float, int]:
    best, frames = float("inf"), 0
    for _ in range(runs):
        start = time.perf_counter()
        frames = sum(1 for _ in estimator.estimate_video(iter(VideoReader(video, max_side=WORKING_SIDE)), fps=30.0))
        best = min(best, time.perf_counter() - start)
    return best, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, default=default_video())
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the best is reported")
    args = parser.parse_args()
    print(f"video: {args.video}")
    print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}")
    model = load_body_model("anny")

    cold_estimator = load_estimator()
    cold, result, _ = timed(args.video, model, cold_estimator, 1)
    frames = result.condition.num_frames
    print(f"body only, cold (MediaPipe graphs built in the run): {frames} frames in {cold:.2f} s = {frames / cold:.1f} frames/s")

    estimator = load_estimator()
    mediapipe_only(args.video, estimator, 1)
    seconds, tracked = mediapipe_only(args.video, estimator, args.runs)
    mp_fps = tracked / seconds
    print(f"decode + MediaPipe tracking only (no fit): {tracked} frames in {seconds:.2f} s = {mp_fps:.1f} frames/s")
    cpu_ms = {}

    hands_estimator = load_estimator(hands=True, face=True)
    timed(args.video, model, hands_estimator, 1)
    seconds, result, cpu = timed(args.video, model, hands_estimator, args.runs)
    hands_fps = frames / seconds
    cpu_ms["hands"] = cpu / frames * 1000
    print(f"with hands and face (holistic), warm: {frames} frames in {seconds:.2f} s = {hands_fps:.1f} frames/s ({cpu_ms['hands']:.0f} CPU ms a frame)")

    timed(args.video, model, estimator, 1)
    seconds, smoothed, cpu = timed(args.video, model, estimator, args.runs)
    body_fps = frames / seconds
    cpu_ms["body"] = cpu / frames * 1000
    print(f"body only, warm: {frames} frames in {seconds:.2f} s = {body_fps:.1f} frames/s ({cpu_ms['body']:.0f} CPU ms a frame)")

    _, raw, _ = timed(args.video, model, estimator, 1, FitConfig(smoothing=False))
    fps = smoothed.condition.fps
    body = list(range(22))
    before = joint_acceleration(raw.condition.joints3d(model)[:, body].numpy(), fps)
    after = joint_acceleration(smoothed.condition.joints3d(model)[:, body].numpy(), fps)
    print(f"joint acceleration of the 22 body joints at {fps:g} fps: {before:.2f} m/s^2 without the smoother, {after:.2f} with it")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"cpu_ms_per_frame_body={cpu_ms['body']:.0f}")
    print(f"cpu_ms_per_frame_hands={cpu_ms['hands']:.0f}")
    print(f"jitter_reduction={1 - after / before:.3f}")
    print(f"mediapipe_only_fps={mp_fps:.1f}")
    print(f"pose_hands_fps={hands_fps:.1f}")
    print(f"pose_fps={body_fps:.1f}")


if __name__ == "__main__":
    main()
