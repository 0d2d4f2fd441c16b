"""The shared contract test every pipeline's tests reuse (in the spirit of diffusers'
``PipelineTesterMixin``).

A pipeline's test module subclasses ``PipelineContract`` and provides a fixture ``contract`` that
returns a ``ContractCase``: how to build the pipeline from tiny components (``make_pipeline(config)``)
and a request for each of its tasks (``make_request(task, seed=..., **fields)``). The mixin then checks,
for every pipeline alike: the declared contract, each task end to end with the result's types and
shapes, seeding, the one-line error for each missing required condition, unknown and malformed
settings, and resume where the pipeline checkpoints inside a call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from studio.errors import StudioError
from studio.pipeline import CONDITION_WORDS, RESULTS, check_pipeline_class, check_request, config_fields, make_config


@dataclasses.dataclass
class ContractCase:
    pipeline_class: type
    make_pipeline: Callable[[Any], Any]  # config -> a pipeline built from tiny components
    make_request: Callable[..., Any]  # (task, *, seed=0, **fields) -> that task's request
    deterministic: bool = False  # the output does not depend on the seed (a classical method)
    resumable: bool = False  # animate keeps state in request.checkpoint_dir and resumes from it
    registered: bool = True  # listed by the studio.pipelines entry points of this installation


def _output(task: str, result: Any) -> np.ndarray:
    """The array a task's result carries, for comparisons."""
    if task == "animate" or task == "novel_view":
        return result.frames
    if task == "image":
        return result.image
    if task == "avatar":
        return np.frombuffer(Path(result.path).read_bytes(), np.uint8)
    return np.asarray(result.image if result.image is not None else [])


def _check_result(task: str, request: Any, result: Any) -> None:
    assert isinstance(result, RESULTS[task]), f"{task}() must return a {RESULTS[task].__name__}"
    if task in ("animate", "novel_view"):
        frames = result.frames
        count = request.motion.num_frames if task == "animate" else request.target.num_frames
        assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8
        assert frames.shape == (count, *request.size, 3), frames.shape
    elif task == "image":
        assert result.image.dtype == np.uint8 and result.image.shape == (*request.size, 3)
    elif task == "avatar":
        assert Path(result.path).is_file() and Path(result.path).stat().st_size > 0
    elif task == "hoi":
        assert result.condition is not None and result.scene is not None


class PipelineContract:
    """Mix into a test class that defines a ``contract`` fixture (see the module docstring)."""

    def test_declares_the_contract(self, contract: ContractCase):
        cls = contract.pipeline_class
        assert check_pipeline_class(cls) == []
        fields = config_fields(cls.Config)
        undocumented = [f.name for f in fields if not f.doc]
        assert not undocumented, f"Config fields without a docstring: {undocumented}"
        make_config(cls, {})  # the defaults are a valid config
        ok, message = cls.weights_status(None)
        assert isinstance(ok, bool) and isinstance(message, str) and message
        if contract.registered:
            from studio.registry import registered_pipelines

            assert registered_pipelines().get(cls.name) is cls

    def test_each_task_end_to_end(self, contract: ContractCase):
        pipe = contract.make_pipeline(make_config(contract.pipeline_class, {}))
        try:
            for task in contract.pipeline_class.tasks:
                request = contract.make_request(task, seed=0)
                check_request(contract.pipeline_class, request)
                _check_result(task, request, getattr(pipe, task)(request))
        finally:
            pipe.close()

    def test_seeding(self, contract: ContractCase):
        task = contract.pipeline_class.tasks[0]
        pipe = contract.make_pipeline(make_config(contract.pipeline_class, {}))
        try:
            first = _output(task, getattr(pipe, task)(contract.make_request(task, seed=0)))
            again = _output(task, getattr(pipe, task)(contract.make_request(task, seed=0)))
            other = _output(task, getattr(pipe, task)(contract.make_request(task, seed=1)))
        finally:
            pipe.close()
        np.testing.assert_array_equal(first, again)
        if contract.deterministic:
            np.testing.assert_array_equal(first, other)
        else:
            assert not np.array_equal(first, other), "a different seed must give a different output"

    def test_missing_conditions_are_one_line(self, contract: ContractCase):
        cls = contract.pipeline_class
        for task in cls.tasks:
            request = contract.make_request(task, seed=0)
            for name in cls.required_conditions:
                if not hasattr(request, name):
                    continue
                with pytest.raises(StudioError) as error:
                    check_request(cls, dataclasses.replace(request, **{name: None}))
                message = str(error.value)
                assert cls.name in message and CONDITION_WORDS.get(name, name) in message and "\n" not in message

    def test_unknown_and_malformed_settings(self, contract: ContractCase):
        cls = contract.pipeline_class
        with pytest.raises(StudioError) as error:
            make_config(cls, ["surely_not_a_setting=1"])
        message = str(error.value)
        assert "unknown setting 'surely_not_a_setting'" in message
        for field in config_fields(cls.Config):
            assert field.name in message  # the valid keys are listed
            if field.type_name in ("int", "float", "bool") or field.choices:
                with pytest.raises(StudioError, match=f"setting {field.name}="):
                    make_config(cls, [f"{field.name}=not-a-value"])
        with pytest.raises(StudioError, match="key=value"):
            make_config(cls, ["no equals sign"])

    def test_resume_inside_a_call(self, contract: ContractCase, tmp_path):
        if not contract.resumable:
            pytest.skip(f"{contract.pipeline_class.name} does not checkpoint inside a call")
        task = "animate"
        pipe = contract.make_pipeline(make_config(contract.pipeline_class, {}))
        try:
            first = pipe.animate(contract.make_request(task, seed=0, checkpoint_dir=tmp_path)).frames
            calls = []
            again = pipe.animate(contract.make_request(task, seed=0, checkpoint_dir=tmp_path, on_progress=lambda d, t: calls.append(d))).frames
        finally:
            pipe.close()
        assert calls == []  # everything was already done
        np.testing.assert_array_equal(first, again)
