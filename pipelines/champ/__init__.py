"""Champ (Zhu et al. 2024): human image animation guided by 3D body renders, loading the released weights.

See ``pipeline`` for sampling, ``model`` for the networks (diffusers blocks), ``weights`` for the file
layout and ``train`` for the two training stages. Importing this package is light: diffusers and
transformers load only when networks are built, so the registry can list Champ cheaply.
"""

from .config import SD15_UNET_CONFIG, ChampModelConfig, MotionModuleConfig
from .pipeline import ChampConfig, ChampOutput, ChampPipeline, context_windows, make_scheduler

_MODEL_NAMES = ("GuidanceEncoder", "ReferenceBank", "VideoUNet", "build_networks", "build_unet", "encode_guidance")


def __getattr__(name: str):
    if name in _MODEL_NAMES:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SD15_UNET_CONFIG",
    "ChampConfig",
    "ChampModelConfig",
    "ChampOutput",
    "ChampPipeline",
    "MotionModuleConfig",
    "context_windows",
    "make_scheduler",
    *_MODEL_NAMES,
]
