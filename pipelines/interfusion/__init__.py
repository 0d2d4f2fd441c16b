"""InterFusion-style text to 3D human-object interaction (task ``hoi``), offline on a CPU.

See ``pipeline`` for the steps; the pipeline class is registered as the ``interfusion`` entry point.
"""

from pipelines.interfusion.pipeline import InterFusionConfig, InterFusionPipeline

__all__ = ["InterFusionConfig", "InterFusionPipeline"]
