"""How a packager process ends once its work is done."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


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
