"""Run the packager CLI and SIGKILL this very process at the Nth line executed in packager/.

CRASH_AT=N kills at line event N (counting only lines of packager's own modules);
CRASH_AT=0 runs to the end and writes the number of line events to CRASH_COUNT_FILE.
Used by test_crash.py to kill an install at many precise points.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import packager

ROOT = str(Path(packager.__file__).parent)
TARGET = int(os.environ["CRASH_AT"])
count = 0


def local(frame: FrameType, event: str, arg: Any) -> Any:
    global count
    if event == "line":
        count += 1
        if count == TARGET:
            os.kill(os.getpid(), signal.SIGKILL)
    return local


def tracer(frame: FrameType, event: str, arg: Any) -> Any:
    return local if frame.f_code.co_filename.startswith(ROOT) else None


if __name__ == "__main__":
    from packager.cli import main

    threading.settrace(tracer)
    sys.settrace(tracer)
    code = main(sys.argv[1:])
    sys.settrace(None)
    if TARGET == 0:
        Path(os.environ["CRASH_COUNT_FILE"]).write_text(str(count))
    sys.exit(code)
