"""Checks shared by every pipeline that loads a user's checkpoint: one line naming what is wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from studio.errors import StudioError


def check_state(expected: Mapping[str, torch.Size | Sequence[int]], state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Raise one line naming the first missing, unexpected or wrongly shaped tensor of ``state``
    against ``expected`` (key -> shape); ``source`` names the file in the message."""
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise StudioError(f"{source}: tensor '{missing[0]}' is missing{more}; is this the right file?")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise StudioError(f"{source}: unexpected tensor '{unexpected[0]}'{more}; is this the right file?")
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise StudioError(f"{source}: tensor '{key}' has shape {list(state[key].shape)}, expected {list(shape)}")


__all__ = ["check_state"]
