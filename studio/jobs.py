"""What long jobs share: a chunk store that checkpoints work beside the output and resumes it, and the
resolved-settings file written beside every output.

``ChunkStore`` keeps ``OUT.partial/`` beside the output ``OUT``: ``settings.json`` (the resolved
settings with a fingerprint of the inputs) and one ``chunk_NNNNN.npy`` per finished chunk, each written
atomically. A resumed run whose inputs and settings match skips the chunks already there; one that does
not match starts over. Pipelines that resume inside one long call keep their own state in
``store.folder`` too (a diffusion pipeline saves its latents there after every denoising step).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from studio.outputs import atomic_path


def settings_path(output: str | Path, *, folder: bool = False) -> Path:
    """Where the resolved settings of ``output`` go: ``OUT.json`` beside a file, ``DIR/settings.json``
    in an output folder."""
    output = Path(output)
    return output / "settings.json" if folder else output.with_suffix(".json")


def write_settings(path: str | Path, settings: dict) -> Path:
    """Write resolved settings as JSON (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=2, default=str) + "\n")
    return path


def fingerprint(paths: Iterable[Path], settings: dict) -> str:
    """A digest of input files' contents and the settings: a resumed run must match it."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class ChunkStore:
    """Checkpointed chunks of one job's output (see the module docstring)."""

    def __init__(self, output: str | Path, settings: dict, *, inputs: Iterable[Path], resume: bool) -> None:
        self.output = Path(output)
        self.folder = self.output.with_name(self.output.name + ".partial")
        self.notes: list[str] = []
        self.settings = dict(settings)
        self.settings["fingerprint"] = fingerprint(inputs, settings)
        state = self.folder / "settings.json"
        if self.folder.exists() and not (resume and _saved_fingerprint(state) == self.settings["fingerprint"]):
            if resume:
                self.notes.append("the unfinished run does not match these inputs and settings; starting over")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_settings(state, self.settings)

    def _chunk(self, index: int) -> Path:
        return self.folder / f"chunk_{index:05d}.npy"

    def done(self, index: int) -> bool:
        return self._chunk(index).is_file()

    def save(self, index: int, array: np.ndarray) -> None:
        with atomic_path(self._chunk(index)) as tmp, open(tmp, "wb") as f:
            np.save(f, array)

    def load(self, index: int) -> np.ndarray:
        return np.load(self._chunk(index))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _saved_fingerprint(state: Path) -> str | None:
    """The fingerprint an unfinished run saved, or None when there is none or it is unreadable."""
    try:
        return json.loads(state.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


__all__ = ["ChunkStore", "fingerprint", "settings_path", "write_settings"]
