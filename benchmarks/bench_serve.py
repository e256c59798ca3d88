"""Target 7: `packager serve` against MLServer serving the original scikit-learn model, and
against an echo server on the same HTTP stack (the protocol floor).

    python benchmarks/bench_serve.py [--runs N] [--keep DIR]

Two models: the iris pipeline (StandardScaler + LogisticRegression) and a larger tree
ensemble (a random forest, 100 trees, 20 features). Each is installed and served by
`packager serve`, with its default settings and with ``--max-batch-size 64`` (requests
read at the same moment run as one batch: both models' rows are independent); MLServer 1.7
with mlserver-sklearn serves the same fitted model from its joblib file (default
settings); the echo server is uvicorn + Starlette (httptools, uvloop), as `packager serve`
is, answering each request with its own body. All get the same Open Inference Protocol
request (one row, FP32) from wrk (`apt-get install wrk`), one connection, then 16, for a
few seconds a run; subject and references alternate.

Targets: requests/s at least 2 x MLServer's (seconds per request <= 0.5 x), with the
default settings; p50 latency at most 1.5 x the echo server's, with the default settings
for one client (one request at a time: nothing to batch) and batching for 16. The cost
over an in-process `packager.load(...).predict` is reported beside them, and the figures of
the other setting in each note.

MLServer pins many packages: it is installed into a virtual environment of its own under
``$XDG_CACHE_HOME/packager-bench`` (default ~/.cache), made once, never into the
project's environment. If it cannot be installed, its rows say why and the rest is
measured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import PACKAGER, PASSWORD, Fixtures, Row, run, standalone

# MLServer 1.7.1's inference workers call asyncio.get_event_loop() where uvloop 0.22 and
# later raise: its last uvloop that works is pinned.
MLSERVER = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0")
SECONDS = 3
CLIENTS = (1, 16)
# The batch `packager serve --max-batch-size` is measured with: more than the clients.
BATCH = 64

ECHO = textwrap.dedent(
    """
    import sys

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route


    async def echo(request):
        return Response(await request.body(), media_type="application/json")


    async def ready(request):
        return Response(b'{"ready":true}', media_type="application/json")


    app = Starlette(
        routes=[
            Route("/v2/models/{name}/infer", echo, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)
    """
)

# In-process predict of one row, best of timeit repeats (as bench_runtime measures it).
PREDICT = textwrap.dedent(
    """
    import json, sys, timeit
    from pathlib import Path
    import numpy as np
    import packager

    out = {}
    for name, row in json.loads(sys.argv[2]).items():
        model = packager.load(name, home=Path(sys.argv[1]))
        x = np.array([row], dtype=np.float32)
        out[name] = min(timeit.repeat(lambda: model.predict(x), number=500, repeat=5)) / 500
    print(json.dumps(out))
    """
)


@dataclass(frozen=True)
class Served:
    """A model as the benchmark serves it: its name, a row, its original as joblib."""

    name: str
    row: list[float]
    joblib: Path


def models(fx: Fixtures) -> tuple[Path, list[Served]]:
    """PACKAGER_HOME with iris and forest installed, and the originals as joblib files."""
    home = fx.root / "serve-home"
    work = fx.root / "serve-models"
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from packager._io.keys import load_private_key
    from packager.build.api import package

    x_iris, y_iris = load_iris(return_X_y=True)
    x_forest, y_forest = make_classification(
        n_samples=2000, n_features=20, n_informative=10, random_state=0
    )
    trained = {
        "iris": (
            x_iris,
            y_iris,
            lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        ),
        "forest": (
            x_forest,
            y_forest,
            lambda: RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0),
        ),
    }
    served = []
    fx.keys()
    for name, (x, y, make) in trained.items():
        path = work / name / "model.joblib"
        if not path.exists():
            model = make().fit(x, y)
            path.parent.mkdir(parents=True, exist_ok=True)
            joblib.dump(model, path)
            key = load_private_key(fx.key, password=lambda: PASSWORD.encode())
            bundle = package(
                model, sample=x[::10], name=name, version="1.0.0", key=key, out_dir=work / "dist"
            )
            registry = fx.layout(bundle)
            run(
                [PACKAGER, "-q", "install", f"{name}@1.0.0", "--registry", registry,
                 "--key", fx.pub],
                env=fx.env(home),
            )  # fmt: skip
        served.append(Served(name, np.asarray(x[0], dtype=np.float32).tolist(), path))
    return home, served


def request_body(served: Served, input_name: str) -> bytes:
    row = served.row
    tensor = {"name": input_name, "shape": [1, len(row)], "datatype": "FP32", "data": row}
    return json.dumps({"inputs": [tensor]}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready after {timeout:.0f} s")


@contextmanager
def started(command: list[str], url: str, env: dict[str, str], log: Path) -> Iterator[str]:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def mlserver_bin() -> Path:
    """The mlserver command of the benchmark's own virtual environment (made once).

    Raises:
        RuntimeError: it could not be installed.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "packager-bench"
    venv = cache / "_".join(pin.replace("==", "-") for pin in MLSERVER)
    command = venv / "bin" / "mlserver"
    if command.exists():
        return command
    import joblib
    import sklearn

    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The original model is a pickle: MLServer loads it with this scikit-learn and joblib.
    pins = [f"scikit-learn=={sklearn.__version__}", f"joblib=={joblib.__version__}"]
    done = subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", *MLSERVER, *pins],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not command.exists():
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"pip install {' '.join(MLSERVER)} failed: {done.stderr[-500:]}")
    return command


def mlserver_dir(root: Path, served: list[Served], http: int) -> Path:
    """An MLServer model repository: settings.json and one folder per model."""
    repo = root / "mlserver"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    settings = {"http_port": http, "grpc_port": free_port(), "metrics_port": free_port()}
    (repo / "settings.json").write_text(json.dumps(settings))
    for model in served:
        (repo / model.name).mkdir()
        doc = {
            "name": model.name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(model.joblib), "version": "1.0.0"},
        }
        (repo / model.name / "model-settings.json").write_text(json.dumps(doc))
    return repo


@dataclass(frozen=True)
class Load:
    """What wrk measured: requests per second and latency percentiles (seconds)."""

    rps: float
    p50: float
    p99: float


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk(url: str, body: bytes, clients: int, script_dir: Path) -> Load:
    """``wrk`` POSTing ``body`` to ``url`` over ``clients`` connections.

    Raises:
        RuntimeError: a request failed (a non-2xx answer or a socket error).
    """
    script = script_dir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    threads = str(min(clients, 2))
    command = ["wrk", "-t", threads, "-c", str(clients), "-d", f"{SECONDS}s", "--latency"]
    done = subprocess.run([*command, "-s", str(script), url], capture_output=True, text=True)
    out = done.stdout
    if done.returncode != 0 or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk against {url}: {out[-600:]} {done.stderr[-300:]}")

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {percent}% latency in wrk's output: {out[-600:]}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    if rps is None:
        raise RuntimeError(f"no Requests/sec in wrk's output: {out[-600:]}")
    return Load(float(rps.group(1)), latency("50"), latency("99"))


def check_answer(url: str, body: bytes) -> None:
    """One request: the server answers it (200) with outputs."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        if response.status != 200 or "outputs" not in json.loads(response.read()):
            raise RuntimeError(f"{url} did not answer the benchmark's request")


def median_load(loads: list[Load]) -> Load:
    return Load(*(statistics.median(getattr(x, f) for x in loads) for f in ("rps", "p50", "p99")))


def rows(fx: Fixtures, runs: int) -> list[Row]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    home, served = models(fx)
    env = fx.env(home)
    in_process = json.loads(
        run(
            [sys.executable, "-c", PREDICT, home, json.dumps({s.name: s.row for s in served})],
            env=env,
        ).stdout
    )
    problem = ""
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        port = free_port()
        urls = {
            "packager": stack.enter_context(
                started(
                    [str(PACKAGER), "serve", "--port", str(port)],
                    f"http://127.0.0.1:{port}",
                    env,
                    scratch / "packager.log",
                )
            )
        }
        port = free_port()
        urls["batched"] = stack.enter_context(
            started(
                [str(PACKAGER), "serve", "--port", str(port), "--max-batch-size", str(BATCH)],
                f"http://127.0.0.1:{port}",
                env,
                scratch / "batched.log",
            )
        )
        port = free_port()
        urls["echo"] = stack.enter_context(
            started(
                [sys.executable, "-c", ECHO, str(port)],
                f"http://127.0.0.1:{port}",
                env,
                scratch / "echo.log",
            )
        )
        try:
            command = mlserver_bin()
            port = free_port()
            repo = mlserver_dir(scratch, served, port)
            urls["mlserver"] = stack.enter_context(
                started(
                    [str(command), "start", str(repo)],
                    f"http://127.0.0.1:{port}",
                    {**env, "PATH": f"{command.parent}:{env.get('PATH', '')}"},
                    scratch / "mlserver.log",
                )
            )
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            problem = f"MLServer not measured: {e}"
        found = measure(urls, served, runs, scratch)
    return report(found, served, in_process, problem)


def measure(
    urls: dict[str, str], served: list[Served], runs: int, scratch: Path
) -> dict[tuple[str, str, int], Load]:
    """Median Load per (server, model, clients); the servers alternate within each run."""
    bodies = {
        ("packager", s.name): request_body(s, "input") for s in served
    }  # the graphs' one input
    for s in served:
        bodies[("mlserver", s.name)] = request_body(s, "predict")
        bodies[("batched", s.name)] = bodies[("echo", s.name)] = request_body(s, "input")
    for (server, name), body in bodies.items():
        if server in urls and server != "echo":
            check_answer(f"{urls[server]}/v2/models/{name}/infer", body)
    samples: dict[tuple[str, str, int], list[Load]] = {}
    for _ in range(max(runs, 1)):
        for s in served:
            for clients in CLIENTS:
                for server, url in urls.items():
                    body = bodies[(server, s.name)]
                    load = wrk(f"{url}/v2/models/{s.name}/infer", body, clients, scratch)
                    samples.setdefault((server, s.name, clients), []).append(load)
    return {key: median_load(loads) for key, loads in samples.items()}


def report(
    found: dict[tuple[str, str, int], Load],
    served: list[Served],
    in_process: dict[str, float],
    problem: str,
) -> list[Row]:
    result = []
    for s in served:
        for clients in CLIENTS:
            ours = found[("packager", s.name, clients)]
            batched = found[("batched", s.name, clients)]
            echo = found[("echo", s.name, clients)]
            theirs = found.get(("mlserver", s.name, clients))
            who = f"{s.name}, {clients} client{'s' if clients > 1 else ''}"
            note = (
                f"{ours.rps:.0f} req/s, p50 {ours.p50 * 1e6:.0f} µs, p99 {ours.p99 * 1e6:.0f} µs"
                f"; echo {echo.rps:.0f} req/s, p50 {echo.p50 * 1e6:.0f} µs"
            )
            if theirs is not None:
                note += (
                    f"; MLServer {theirs.rps:.0f} req/s, p50 {theirs.p50 * 1e6:.0f} µs, "
                    f"p99 {theirs.p99 * 1e6:.0f} µs"
                )
            note += f"; with --max-batch-size {BATCH}: {batched.rps:.0f} req/s, p50 "
            note += f"{batched.p50 * 1e6:.0f} µs, p99 {batched.p99 * 1e6:.0f} µs"
            if clients == 1:
                cost = ours.p50 - in_process[s.name]
                note += (
                    f"; in-process predict {in_process[s.name] * 1e6:.0f} µs, so HTTP and "
                    f"JSON cost {cost * 1e6:.0f} µs"
                )
            result.append(
                Row(
                    "7 serve",
                    f"`packager serve` {who}: time per request (1 / req/s)",
                    1 / ours.rps,
                    0.5,
                    None if theirs is None else 1 / theirs.rps,
                    "MLServer + mlserver-sklearn",
                    unit="us",
                    note=note,
                    problem="" if theirs is not None else problem,
                )
            )
            # One client has one request in the server at a time: nothing to batch. Several
            # are measured as a server that batches them (the models' rows are independent).
            lone = clients == 1
            option = "" if lone else f" --max-batch-size {BATCH}"
            result.append(
                Row(
                    "7 serve",
                    f"`packager serve{option}` {who}: p50 latency",
                    ours.p50 if lone else batched.p50,
                    1.5,
                    echo.p50,
                    "echo server, same stack",
                    unit="us",
                )
            )
    return result


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
