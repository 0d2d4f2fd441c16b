"""Motion import and export: BVH and SMPL-X/AMASS .npz onto studio's body models, and BVH out."""

from studio.motion.bvh import BVH, read_bvh, write_bvh
from studio.motion.loader import load_motion, motion_duration, motion_kind
from studio.motion.retarget import (
    bvh_to_condition,
    export_bvh,
    frame_camera,
    import_motion,
    joint_map,
    motion_condition,
    smplx_npz_to_condition,
)

__all__ = [
    "BVH",
    "bvh_to_condition",
    "export_bvh",
    "frame_camera",
    "import_motion",
    "joint_map",
    "load_motion",
    "motion_duration",
    "motion_kind",
    "motion_condition",
    "read_bvh",
    "smplx_npz_to_condition",
    "write_bvh",
]
