"""``studio animate``: the person in a reference photo performing a motion, with any registered
pipeline that has the ``animate`` task (or the embedded default the registry names). The job is in
``job``; ``transfer`` moves a motion onto the reference's body and camera, for every pipeline."""

from studio.animate.job import AnimateConfig, AnimateOutput, animate
from studio.camera import output_size
from studio.motion.loader import load_motion

__all__ = ["AnimateConfig", "AnimateOutput", "animate", "load_motion", "output_size"]
