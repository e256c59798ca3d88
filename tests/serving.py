"""A `packager serve` subprocess on 127.0.0.1 for tests and benchmarks: started on a free
port, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    """A running server: its process, its URL (http://127.0.0.1:PORT) and its stderr."""

    process: subprocess.Popen[str]
    url: str
    first_line: str
    stderr: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        """host:port, as tritonclient takes it."""
        return self.url.removeprefix("http://")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def serve_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, PACKAGER_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@contextmanager
def running(
    home: Path,
    *args: str | Path,
    python: str = sys.executable,
    ready_timeout: float = 120,
    prefix: Sequence[str] = (),
) -> Iterator[Server]:
    """``packager serve ARGS --port 0`` until the block ends; ``ARGS`` may name models and set
    limits; ``prefix`` is a command that runs it (and must exec it: its pid is signalled).
    Fails when the server exits before it prints where it listens."""
    command: Sequence[str] = [python, "-m", "packager", "serve", *map(str, args)]
    if "--unix-socket" not in command and "--port" not in command:
        command = [*command, "--port", "0"]
    command = [*prefix, *command]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=serve_env(home),
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or ()), daemon=True)
    reader.start()
    timer = threading.Timer(ready_timeout, process.kill)
    timer.start()
    try:
        first = process.stdout.readline()
    finally:
        timer.cancel()
    if not first.startswith("serving "):
        process.wait(30)
        reader.join(5)
        raise AssertionError(f"packager serve did not start: {first!r} {''.join(stderr)}")
    server = Server(process, first.rsplit(" on ", 1)[1].strip(), first, stderr)
    try:
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
