"""`studio batch pose` over 8 photos with one process and with two (torchrun, accelerate's CPU process
state), each a fresh command as a user would start it (loading the body model and MediaPipe included).

The 8 inputs are made from the bundled media (the sitting photo, mirrored, and frames of the two
videos) in a temporary folder. Prints both wall times; the last line is `batch_speedup=` (one process's
time over two processes'). On a 2-core machine the ceiling is 2x, less what each process loads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_inputs(folder: Path) -> list[Path]:
    """Eight photos from the bundled media."""
    from studio.media import VideoReader, read_image, write_image

    media = ROOT / "assets" / "media"
    photo = read_image(media / "ref_sitting.jpg")
    images = [photo, photo[:, ::-1]]
    for name, picks in (("motion_dribble.mp4", (0, 12, 24)), ("motion_two_people.mp4", (5, 20, 35))):
        for i, frame in enumerate(VideoReader(media / name, max_side=960)):
            if i in picks:
                images.append(frame)
    return [write_image(folder / f"photo_{i}.png", image) for i, image in enumerate(images[:8])]


def run(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed (exit status {result.returncode}):\n{result.stderr[-6000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=29517, help="torchrun's rendezvous port")
    parser.parse_args()
    env = {**os.environ, "COLUMNS": "200"}
    print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = [str(p) for p in make_inputs(tmp)]
        one = run([str(BIN / "studio"), "batch", "pose", *inputs, "-o", str(tmp / "one")], env)
        print(f"1 process: {len(inputs)} photos in {one:.1f} s")
        two = run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(parser.parse_args().port), "-m", "studio.cli", "batch", "pose", *inputs, "-o", str(tmp / "two")], env)
        print(f"2 processes (torchrun): {len(inputs)} photos in {two:.1f} s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"batch_1proc_s={one:.1f}")
    print(f"batch_2proc_s={two:.1f}")
    print(f"batch_speedup={one / two:.2f}")


if __name__ == "__main__":
    main()
