"""SHERF (Hu et al., ICCV 2023): a generalizable human NeRF from one image, on nerfacc, loading the
released checkpoints unmodified (restricted unpickling). See ``pipeline`` for rendering, ``model`` for
the networks (the official parameter tree), ``weights`` for the files and ``train`` for training on
studio's generated multi-view data."""

from .model import SherfGenerator, SherfModelConfig
from .pipeline import SherfConfig, SherfPipeline

__all__ = ["SherfConfig", "SherfGenerator", "SherfModelConfig", "SherfPipeline"]
