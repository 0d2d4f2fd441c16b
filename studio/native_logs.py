"""Keep MediaPipe's and TensorFlow Lite's native start-up chatter off the user's terminal.

Their C++ code writes absl/glog lines straight to file descriptor 2, which Python cannot silence.
``filter_native_stderr`` points descriptor 2 at a pipe whose reader drops those lines and passes
everything else on, while Python's own ``sys.stderr`` keeps writing to the real terminal.
"""

from __future__ import annotations

import os
import re
import sys
import threading

_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:. ]+\s*\d+ \S+\.cc:\d+\]"  # absl/glog: W0000 00:00:17.. 1234 file.cc:12]
    rb"|INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog"
    rb")"
)
_installed = False


def filter_native_stderr(*, keep_python_stderr: bool = False) -> None:
    """Install the filter (once per process), for command-line entry points and notebooks.

    Args:
        keep_python_stderr: leave ``sys.stderr`` as it is (in a Jupyter kernel it already goes to the
            notebook); otherwise it is pointed at the real terminal, past the filter.
    """
    global _installed
    if _installed:
        return
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no usable descriptor 2: nothing to filter
        return
    sys.stderr.flush()
    if not keep_python_stderr:
        sys.stderr = os.fdopen(os.dup(original), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _NOISE.match(line):
                    os.write(original, line)

    threading.Thread(target=pump, name="studio-native-stderr", daemon=True).start()
    _installed = True
