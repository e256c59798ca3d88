"""Run the packager CLI with the smoke test's child started from $SMOKE_INTERPRETER.

The interpreter is a shell script standing in for Python: it records what the child was
given (environment, working directory, process ids) and misbehaves as a test needs (hangs).
Used by test_smoke.py to drive a real `packager install` whose smoke test never ends.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    from packager.cli import main

    sys.executable = os.environ["SMOKE_INTERPRETER"]
    sys.exit(main(sys.argv[1:]))
