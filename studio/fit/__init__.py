"""Body fitting: ``Keypoints`` -> body parameters and a camera, as a ``HumanCondition``. (The
``studio pose`` job that decodes media and runs the estimator around this is ``studio.capture``.)"""

from studio.fit.fitter import BodyFitter, FitConfig

__all__ = ["BodyFitter", "FitConfig"]
