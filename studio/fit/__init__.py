"""Body fitting: ``Keypoints`` -> body parameters and a camera, as a ``HumanCondition``."""

from studio.fit.fitter import BodyFitter, FitConfig
from studio.fit.media import PoseResult, pose_file, pose_image, pose_video

__all__ = ["BodyFitter", "FitConfig", "PoseResult", "pose_file", "pose_image", "pose_video"]
