"""``studio animate``: the person in a reference photo performing a motion, with any registered
pipeline that has the ``animate`` task (the embedded default is the ``mesh`` pipeline). The job is in
``job``; ``transfer`` moves a motion onto the reference's body and camera, for every pipeline."""

from studio.animate.job import AnimateConfig, AnimateOutput, animate
from studio.camera import output_size
from studio.motion.loader import load_motion

__all__ = ["AnimateConfig", "AnimateOutput", "animate", "load_motion", "output_size"]
