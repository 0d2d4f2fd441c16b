"""TransHuman (Pan et al., ICCV 2023): a generalizable human NeRF from a few images, on nerfacc,
loading the released checkpoint unmodified (restricted unpickling). See ``pipeline`` for rendering,
``model`` for the network (the official parameter tree), ``weights`` for the files and ``train`` for
training on studio's generated multi-view data."""

from .model import TransHumanModelConfig, TransHumanNet
from .pipeline import TransHumanConfig, TransHumanPipeline

__all__ = ["TransHumanConfig", "TransHumanModelConfig", "TransHumanNet", "TransHumanPipeline"]
