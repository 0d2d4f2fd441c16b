"""The mesh pipeline through the shared contract (its avatar and transfer are tested in test_animate)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ASSETS
from pipeline_contract import ContractCase, PipelineContract

from pipelines.mesh import MeshConfig, MeshPipeline
from studio.errors import StudioError
from studio.pipeline import AnimateRequest, make_config


@pytest.fixture(scope="module")
def fitted(anny):
    import cv2

    from studio.animate.transfer import transfer_motion
    from studio.camera import output_size
    from studio.capture import pose_image
    from studio.condition import HumanCondition
    from studio.media import read_image

    image = read_image(ASSETS / "media" / "ref_sitting.jpg")
    image = cv2.resize(image, (480, 320), interpolation=cv2.INTER_AREA)
    ref = pose_image(image, body_model=anny)
    size = output_size(image.shape[:2], 96)
    walk = HumanCondition.load(ASSETS / "motions" / "walk.npz")[:3]
    motion, _ = transfer_motion(walk, ref.condition, motion_model=anny, reference_model=anny, image_size=size)
    return image, ref, motion, size


class TestMeshContract(PipelineContract):
    @pytest.fixture
    def contract(self, fitted, anny):
        image, ref, motion, size = fitted

        def make_request(task, *, seed=0, **fields):
            base = dict(
                reference=image, reference_mask=ref.keypoints.mask[0], reference_condition=ref.condition, motion=motion, size=size,
                body_model=anny, seed=seed,
            )  # fmt: skip
            return AnimateRequest(**{**base, **fields})

        return ContractCase(MeshPipeline, lambda config: MeshPipeline.load(None, config), make_request, deterministic=True)


def test_plain_backgrounds_and_supersampling(fitted, anny):
    image, ref, motion, size = fitted
    request = AnimateRequest(image, ref.keypoints.mask[0], ref.condition, motion, size, anny)
    pipe = MeshPipeline.load(None, make_config(MeshPipeline, ["background=green", "supersample=1"]))
    try:
        frames = pipe.animate(request).frames
    finally:
        pipe.close()
    body = motion.render(("mask",), body_model=anny)["mask"] > 0
    assert (frames[~body] == np.array([0, 177, 64], np.uint8)).all(axis=-1).mean() > 0.97  # the key colour around the person
    assert np.abs(frames[body].astype(int) - [0, 177, 64]).sum(-1).mean() > 60  # the person is drawn
    with pytest.raises(StudioError, match="supersample must be 1-4"):
        make_config(MeshPipeline, ["supersample=9"])
    assert MeshConfig().background == "inpaint"
