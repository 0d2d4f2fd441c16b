"""HyperHuman (Liu et al., "HyperHuman: Hyper-Realistic Human Generation with Latent Structural
Diffusion", ICLR 2024), implemented from the paper (no official code or weights exist), and a
ControlNet path that works with public weights today.

- ``HyperHumanPipeline`` (``--backend hyperhuman``): stage 1, ``StructuralUNet``, jointly denoises the
  image, depth and normal latents from a rendered skeleton and a caption; stage 2, the optional
  ``StructureGuidedRefiner``, redraws the image with SDXL from the skeleton, depth and normal.
- ``ControlNetPipeline`` (``--backend controlnet``, in ``.controlnet``): SD 1.5 or SDXL with OpenPose,
  depth and normal ControlNets, from local folders.
- ``train.py``: stage 1 and the refiner, with accelerate.

The networks (``.model``) import diffusers only when a pipeline is built.
"""

from .pipeline import HyperHumanConfig, HyperHumanPipeline, make_scheduler, stage1_size

__all__ = ["HyperHumanConfig", "HyperHumanPipeline", "make_scheduler", "stage1_size"]
