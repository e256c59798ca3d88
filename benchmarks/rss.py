"""Run the packager CLI in this process and write its own peak RSS to a file.

    python benchmarks/rss.py REPORT.json ARGS...

The peak is VmHWM from /proc/self/status: this process's own high-water mark, without
the children it started and waited for (the install's smoke test), which wait4 and
/usr/bin/time add in. (``ru_maxrss`` will not do either: Linux carries the parent's peak
over a fork and exec into the child's.) Started like the ``packager`` script (a Python
process that calls packager.cli.main), so its time is the CLI's time too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from packager.cli import main

if __name__ == "__main__":
    report, args = Path(sys.argv[1]), sys.argv[2:]
    code = main(args)
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    report.write_text(json.dumps({"peakRss": peak, "exitCode": code}))
    sys.exit(code)
