"""A small disk cache of per-reference work, so animating the same photo again skips what only the
photo decides: its fit (``studio animate``) and a pipeline's avatar (the mesh pipeline's texture and
inpainted background).

Entries live in ``$STUDIO_CACHE_DIR/avatars`` (default ``~/.cache/studio/avatars``), one ``.npz`` per
key, written atomically; the key is a digest of everything the entry depends on (the photo's bytes,
the settings, ``CACHE_VERSION``), so a changed photo or setting never reads a stale entry. The oldest
entries go when there are more than ``MAX_ENTRIES``. ``STUDIO_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when what is cached changes meaning (2: held objects, new texture and inpainting)
MAX_ENTRIES = 64


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off."""
    if os.environ.get("STUDIO_NO_CACHE", "").strip() not in ("", "0"):
        return None
    root = os.environ.get("STUDIO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "studio")
    return Path(root) / "avatars"


def cache_key(kind: str, *parts: object) -> str:
    """A digest of ``kind``, ``CACHE_VERSION`` and ``parts`` (bytes, arrays or anything JSON can show)."""
    digest = hashlib.sha256(f"{kind}/{CACHE_VERSION}".encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.shape, part.dtype)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (bytes, bytearray)):
            digest.update(part)
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return f"{kind}-{digest.hexdigest()[:24]}"


def load_entry(key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``key``, or None (absent, unreadable or caching off)."""
    folder = cache_dir()
    path = None if folder is None else folder / f"{key}.npz"
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        os.utime(path)  # recently used: kept longest
        return arrays
    except (OSError, ValueError, KeyError) as exc:
        logger.info("ignoring the unreadable cache entry %s (%s)", path, exc)
        return None


def save_entry(key: str, arrays: dict[str, np.ndarray]) -> None:
    """Store arrays under ``key`` (atomically); a cache that cannot be written is skipped, never an error."""
    from studio.outputs import atomic_path

    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"{key}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        entries = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-MAX_ENTRIES]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        logger.info("could not write the cache entry %s (%s)", key, exc)
