"""The pipeline registry, filled from the ``studio.pipelines`` entry-point group in pyproject.toml.

The CLI and the Gradio app list what is registered here; there is no hand-kept list. A registered
object is a pipeline class with a ``name`` and a ``weights_status(weights_dir) -> (ok, message)``
classmethod that says, without loading anything, whether its weights are present.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from pathlib import Path

logger = logging.getLogger(__name__)
GROUP = "studio.pipelines"


def registered_pipelines() -> dict[str, object]:
    """name -> pipeline class for every entry point in the group (broken ones are logged, skipped)."""
    found = {}
    for ep in entry_points(group=GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken plug-in must not take the CLI down
            logger.warning("pipeline '%s' could not be loaded: %s", ep.name, exc)
    return found


def weights_root(weights: str | Path | None = None) -> Path | None:
    """The weights folder: the argument, else $STUDIO_WEIGHTS, else None."""
    if weights is not None:
        return Path(weights)
    env = os.environ.get("STUDIO_WEIGHTS")
    return Path(env) if env else None
