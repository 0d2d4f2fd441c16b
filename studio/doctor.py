"""``studio doctor``: what this machine can run, checked for real rather than guessed."""

from __future__ import annotations

import dataclasses
import importlib.util
import platform
from pathlib import Path


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True  # the embedded defaults need it


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_checks(*, body_model_dir: str | None = None, weights: str | None = None) -> list[Check]:
    """Run every check; each catches its own failure and reports it."""
    checks: list[Check] = []
    checks.append(Check("python", True, platform.python_version()))

    import torch

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "none (CPU paths)"
    checks.append(Check("torch", True, f"{torch.__version__}, {torch.get_num_threads()} CPU threads, GPU: {gpu}"))

    try:
        from studio.render.gl import egl_platform_hint, renderer_name

        egl_platform_hint()
        checks.append(Check("EGL renderer", True, renderer_name()))
    except Exception as exc:
        checks.append(Check("EGL renderer", False, str(exc)))

    from studio.body.anny_body import anny_cache_dir, anny_cache_ready

    cache = anny_cache_dir()
    try:
        from studio.body import load_body_model

        was_ready = anny_cache_ready()
        model = load_body_model("anny")
        size = _dir_size(cache) / 1e6
        checks.append(
            Check(
                "anny body model",
                True,
                f"{model.num_vertices} vertices; cache {cache} ({size:.0f} MB, "
                + ("ready)" if was_ready else "built just now)"),
            )
        )
    except Exception as exc:
        checks.append(Check("anny body model", False, f"{exc} (cache: {cache})"))

    from studio.body import BODY_MODELS

    for spec in BODY_MODELS.values():
        if not spec.user_files:
            continue
        try:
            checks.append(Check(f"{spec.name} model files", True, str(spec.find_file(body_model_dir)), required=False))
        except Exception:
            where = spec.model_dir(body_model_dir)
            looked = f"looked in {where}" if where else f"no --body-model-dir and {spec.env_var} is unset"
            checks.append(Check(f"{spec.name} model files", False, f"not found ({looked}); optional, anny is the default", required=False))

    mp_spec = importlib.util.find_spec("mediapipe")
    if mp_spec is None or mp_spec.origin is None:
        checks.append(Check("MediaPipe models", False, "mediapipe is not installed"))
    else:
        modules = Path(mp_spec.origin).parent / "modules"
        wanted = [
            "pose_detection/pose_detection.tflite",
            "pose_landmark/pose_landmark_full.tflite",
            "hand_landmark/hand_landmark_full.tflite",
            "selfie_segmentation/selfie_segmentation.tflite",
        ]
        missing = [w for w in wanted if not (modules / w).is_file()]
        checks.append(
            Check(
                "MediaPipe models",
                not missing,
                f"missing {missing}" if missing else f"pose, hands, face, segmentation bundled in {modules}",
            )
        )

    try:
        import imageio_ffmpeg

        checks.append(Check("ffmpeg", True, imageio_ffmpeg.get_ffmpeg_exe()))
    except Exception as exc:
        checks.append(Check("ffmpeg", False, str(exc)))

    return checks


def pipeline_rows(weights: str | None = None, task: str | None = None) -> list[tuple[str, str, str, str, str]]:
    """One row per registered pipeline, for ``studio pipelines`` and ``studio doctor``: (name, tasks,
    weights, GPU, runs here)."""
    from studio.registry import statuses

    rows = []
    for s in statuses(task, weights):
        weights_cell = f"{'found' if s.weights_ok else 'missing'}: {s.weights_message}"
        gpu = ("needed; present" if s.gpu_ok else "needed; none here") if s.needs_gpu else "not needed"
        here = "yes" if s.practical else ("yes, slowly (asked for by name)" if s.runnable else "no: weights missing")
        rows.append((s.name, ", ".join(s.tasks), weights_cell, gpu, here))
    return rows
