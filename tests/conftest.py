from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("ANNY_CACHE_DIR", str(Path.home() / ".cache" / "studio" / "anny"))
os.environ.setdefault("EGL_PLATFORM", "surfaceless")
if "STUDIO_CACHE_DIR" not in os.environ:  # tests keep the per-photo avatar cache out of the user's home
    import tempfile

    os.environ["STUDIO_CACHE_DIR"] = tempfile.mkdtemp(prefix="studio-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
SHARED_MEDIA = ROOT.parent / "shared" / "media"


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def anny():
    from studio.body import load_body_model

    return load_body_model("anny")


@pytest.fixture(scope="session")
def smplx_dir(tmp_path_factory) -> Path:
    from synthetic_smplx import write_synthetic_smplx

    folder = tmp_path_factory.mktemp("smplx_models")
    write_synthetic_smplx(folder)
    return folder


@pytest.fixture(scope="session")
def smplx_body(smplx_dir):
    from studio.body.smplx_body import SMPLXBody

    return SMPLXBody(smplx_dir)


@pytest.fixture(scope="session")
def smpl_dir(tmp_path_factory) -> Path:
    from synthetic_smpl import write_synthetic_smpl

    folder = tmp_path_factory.mktemp("smpl_models")
    write_synthetic_smpl(folder)
    return folder


@pytest.fixture(scope="session")
def smpl_body(smpl_dir):
    from studio.body.smpl_body import SMPLBody

    return SMPLBody(smpl_dir)


@pytest.fixture(scope="session")
def walk():
    from studio.condition import HumanCondition

    return HumanCondition.load(ASSETS / "motions" / "walk.npz")
