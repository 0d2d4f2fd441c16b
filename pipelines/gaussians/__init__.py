"""MVD-HuGaS-style animatable 3D Gaussian avatars from one photo, on a CPU (see ``pipeline``)."""

from .pipeline import GaussianAvatarPipeline, GaussianConfig

__all__ = ["GaussianAvatarPipeline", "GaussianConfig"]
