"""How a packager process ends once its work is done."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def fill_closed_standard_streams() -> None:
    """Open /dev/null on each of descriptors 0, 1 and 2 that was closed when Python started
    (cron and service managers may start a command so): otherwise the next file opened
    would take that number, and whatever writes to standard output or error (onnxruntime's
    log, a child process) would write into that file: state.db, a model being installed."""
    for fd, stream in enumerate((sys.stdin, sys.stdout, sys.stderr)):
        if stream is not None:
            continue  # open when Python started
        try:
            os.fstat(fd)
            continue  # taken since by a file of Python's own: not ours to replace
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


def leave(code: int) -> NoReturn:
    """End the process with ``code`` once its work is done: exit handlers run and stdout
    and stderr are flushed, but the interpreter is not torn down object by object (with
    the modules an install imports, that alone takes tens of milliseconds of CPU after
    the result is printed, and frees nothing a process that ends needs freed). Files and
    databases are closed by the commands themselves. While a thread other than daemons
    still runs, a profiler or tracer watches (it writes its results as the interpreter
    exits), or a stream cannot be flushed, the interpreter's own exit does it all."""
    main_thread = threading.main_thread()
    others = any(t is not main_thread and not t.daemon for t in threading.enumerate())
    if others or _watched():
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the descriptor was closed when Python started
                stream.flush()
    except Exception:
        sys.exit(code)
    os._exit(code)


def _watched() -> bool:
    """A profiler, tracer or coverage tool is attached: sys.setprofile/settrace, or on
    Python 3.12 and later a tool registered with sys.monitoring (cProfile and coverage
    use it there, leaving sys.getprofile() None)."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return False
    return any(monitoring.get_tool(tool) is not None for tool in range(6))
