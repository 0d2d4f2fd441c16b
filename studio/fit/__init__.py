"""Body fitting: ``Keypoints`` -> body parameters and a camera, as a ``HumanCondition``. (The
``studio pose`` job that decodes media and runs the estimator around this is ``studio.capture``.)

- ``fitter``: ``BodyFitter`` and ``FitConfig`` (the objective and its optimisation);
- ``prior``: joint limits and the pose prior learned from CMU mocap (``PosePrior``);
- ``evidence``: per-limb trust in the metric landmarks and ordinal depth from occlusion;
- ``silhouette``: the fitted body against the person mask;
- ``focal``: the focal length from EXIF or from the body's perspective;
- ``smoothing``: the bidirectional (RTS) smoother of a video's fitted parameters;
- ``evaluation``: synthetic keypoints and the MPJPE / PA-MPJPE metrics.
"""

from studio.fit.fitter import BodyFitter, FitConfig

__all__ = ["BodyFitter", "FitConfig"]
