"""One way to write outputs: checked before the work starts, written to hidden temporary files beside
their final names, and published together only when every one of them is complete.

- ``check_outputs`` refuses, before any work: an output that is a folder, whose folder is a file, that
  aliases an input or another output (the same path, a symlink or a hard link), or whose folder cannot
  be written.
- ``atomic_path(path)`` yields a temporary path beside ``path`` (``.NAME.PID-XXXX.partial.SUFFIX``) and
  renames it into place on success, deletes it on error.
- ``Publication`` groups the outputs of one job: inside it, ``atomic_path`` of a declared output (or of a
  file inside a declared output folder) is not renamed at once but held until the whole job succeeds,
  then all are renamed together. If anything fails (an error, Ctrl-C, a full disk) none of them is
  published and every temporary file is removed.
- Temporary files left by a process that was killed (SIGKILL leaves no chance to clean up) are
  removed by the next job that writes the same output: their name carries the writer's process id.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import glob
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from studio.errors import StudioError

logger = logging.getLogger(__name__)

_TEMP = re.compile(r"\.(?P<pid>\d+)-[0-9a-f]+\.partial")
_active: contextvars.ContextVar[Publication | None] = contextvars.ContextVar("studio_publication", default=None)


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path`` that keeps its suffix (writers pick formats by it)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial{path.suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(path: Path, *, inside: bool = False) -> int:
    """Remove temporary files (or folders) of ``path`` left by processes that no longer run; with
    ``inside``, those of every file in the folder ``path``."""
    removed = 0
    folder, pattern = (path, ".*.partial*") if inside else (path.parent, f".{glob.escape(path.name)}.*.partial*")
    for stale in folder.glob(pattern) if folder.is_dir() else ():
        match = _TEMP.search(stale.name)
        if match is None or _pid_alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
            removed += 1
    if removed:
        logger.info("removed %d temporary file(s) of %s left by an interrupted run", removed, path)
    return removed


def os_error_message(exc: OSError, *, where: Path | None = None) -> str:
    """One line for an OSError that comes from the user's environment (a full disk, a read-only or
    missing folder), naming the folder or file involved, never a hidden temporary file."""
    name = Path(exc.filename) if exc.filename else where
    if name is not None and _TEMP.search(name.name):
        name = name.parent  # a temporary file: name its folder
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        folder = name if name is not None and name.is_dir() else (name.parent if name is not None else None)
        return f"no space left on the device holding {folder or 'the output folder'}; nothing was written"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        kind = "read-only file system" if code == errno.EROFS else "permission denied"
        return f"cannot write {name or 'the output'} ({kind})"
    if code == errno.EISDIR:
        return f"{name}: is a folder; give a file name"
    if code == errno.ENOTDIR:
        return f"{name}: a part of this path is a file, not a folder"
    if code == errno.ENAMETOOLONG:
        return f"{name}: the file name is too long"
    return f"{name or 'output'}: {exc.strerror or exc}"


# Errors from the user's environment rather than from studio: shown as one line.
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ENOENT}


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Mapping[str, Path | None], *, inputs: Mapping[str, Path | None] = {}, folders: tuple[str, ...] = ()) -> None:
    """Refuse outputs that cannot be written as asked, before any work starts.

    Args:
        outputs: what the user calls each output ("-o", "--preview") -> its path (None: not asked for).
        inputs: the same for the job's inputs, which no output may overwrite.
        folders: labels of outputs that are folders (``-o DIR/``) rather than files.
    """
    outs = {k: Path(v) for k, v in outputs.items() if v is not None}
    ins = {k: Path(v) for k, v in inputs.items() if v is not None}
    for label, path in outs.items():
        if label in folders:
            if path.exists() and not path.is_dir():
                raise StudioError(f"{label} {path}: is a file; give a folder (or a new name)")
        elif path.is_dir():
            raise StudioError(f"{label} {path}: is a folder; give a file name")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise StudioError(f"{label} {path}: {parent} is a file, not a folder")
                break
        for other, ipath in ins.items():
            if _same(path, ipath):
                raise StudioError(f"{label} {path} would overwrite the input {other} {ipath}; choose another name")
    labels = list(outs)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            if _same(outs[a], outs[b]):
                raise StudioError(f"{a} and {b} are the same file ({outs[a]}); give each output its own name")


def _ensure_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudioError(os_error_message(exc, where=path.parent)) from exc


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path`` (or, inside a
    ``Publication`` that declares ``path``, hand it to the publication), on error delete it."""
    path = Path(path)
    _ensure_folder(path)
    publication = _active.get()
    if publication is None or not publication.declares(path):  # a publication swept its outputs already
        sweep_stale_temps(path)
    tmp = temp_path_for(path)
    try:
        tmp.touch(mode=0o666)  # reserve the name; the umask gives the usual permissions
    except OSError as exc:
        raise StudioError(os_error_message(exc, where=path.parent)) from exc
    try:
        yield tmp
        if not tmp.exists():
            raise StudioError(f"{path}: the writer produced no file")
        if publication is not None and publication.declares(path):
            publication.hold(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS:
            raise StudioError(os_error_message(exc, where=path)) from exc
        raise


class Publication:
    """The outputs of one job, checked up front and published together (see the module docstring).

    Use as a context manager around the whole job::

        with Publication({"-o": out, "--preview": preview}, inputs={"input": media}) as pub:
            ...  # write with atomic_path / VideoWriter / write_image as usual
        pub.published  # the paths now in place
    """

    def __init__(self, outputs: Mapping[str, Path | None], *, inputs: Mapping[str, Path | None] = {}, folders: tuple[str, ...] = ()) -> None:
        check_outputs(outputs, inputs=inputs, folders=folders)
        self.files = [Path(p) for k, p in outputs.items() if p is not None and k not in folders]
        self.folders = [Path(p) for k, p in outputs.items() if p is not None and k in folders]
        self._declared = {os.path.realpath(p) for p in self.files}
        self._held: list[tuple[Path, Path]] = []
        self.published: list[Path] = []
        self._token: contextvars.Token | None = None
        self._created: list[Path] = []  # folders made for the outputs, removed again if nothing is published

    def declares(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return real in self._declared or any(Path(real).is_relative_to(os.path.realpath(f)) for f in self.folders)

    def hold(self, tmp: Path, final: Path) -> None:
        self._held = [(t, f) for t, f in self._held if os.path.realpath(f) != os.path.realpath(final)]
        self._held.append((tmp, final))

    def __enter__(self) -> Publication:
        for path in self.files + self.folders:
            missing = [p for p in (path, *path.parents) if not p.exists()]
            if path in self.folders and missing:
                self._created.append(missing[-1])
            elif missing[1:]:
                self._created.append(missing[-1])
            _ensure_folder(path)
            sweep_stale_temps(path)
            if path in self.folders:
                sweep_stale_temps(path, inside=True)
            probe = temp_path_for(path)
            try:  # a read-only or full folder is found now, not after the work
                probe.touch()
                probe.unlink()
            except OSError as exc:
                raise StudioError(os_error_message(exc, where=path.parent)) from exc
        self._token = _active.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _active.reset(self._token)
        if exc_type is None:
            try:
                self._publish()
            except BaseException as failure:
                translated = self._discard(failure)
                if translated is failure:
                    raise
                raise translated from failure
            return None
        translated = self._discard(exc)
        if translated is not exc:
            raise translated from exc
        return None

    def _discard(self, exc: BaseException) -> BaseException:
        for tmp, _ in self._held:
            tmp.unlink(missing_ok=True)
        self._held = []
        for folder in self._created:
            for sub, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(sub)  # only empty folders go
        if isinstance(exc, OSError) and exc.errno in USER_OS_ERRORS:
            return StudioError(os_error_message(exc))
        return exc

    def _publish(self) -> None:
        written = {os.path.realpath(final) for _, final in self._held}
        for path in self.files:  # a declared output nobody wrote would leave an old file posing as new
            if os.path.realpath(path) not in written:
                raise StudioError(f"{path}: nothing was written for it, so nothing was published")
        for tmp, final in self._held:
            if tmp.stat().st_size == 0:
                raise StudioError(f"{final}: the written file is empty; nothing was published")
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)
        done: list[Path] = []
        try:
            for tmp, final in self._held:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                done.append(final)
        except OSError as exc:
            written = ", ".join(map(str, done)) or "nothing"
            raise StudioError(f"{os_error_message(exc)} (already in place: {written})") from exc
        self.published = done
        self._held = []
