"""`packager serve --max-batch-size`: inference requests for one model read in the same turn
of the event loop, or in the next poll of the sockets, run as one batch, and each gets its
own rows back.

Whether requests ran together is seen from the outside: a model that adds the sum of all
its input rows to each row answers a request differently in a batch than alone. The
application is driven as uvicorn drives it, several requests started in one turn of the
event loop; a real server under concurrent clients is judged by its answers."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from packager.build.api import package
from packager.cli import main
from packager.instance.serve.app import Limits, build_app
from packager.instance.serve.served import Served
from packager.instance.store import Store

from .conftest import KeyPair
from .serving import running

pytestmark = pytest.mark.slow


def summing_model(*, keep_rows: bool) -> Any:
    """y = x + the sum of x's rows (``keep_rows``: one output row per input row), or
    y = the sum of x's rows (one row whatever the batch: not by row)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "M"])
    rows = "N" if keep_rows else 1
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, "M"])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["total" if keep_rows else "y"])]
    if keep_rows:
        nodes.append(helper.make_node("Add", ["x", "total"], ["y"]))
    graph = helper.make_graph(nodes, "summing", [x], [y], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def summing_bundles(keypair: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("summing")
    sample = np.arange(6, dtype=np.float32).reshape(3, 2)
    return [
        package(summing_model(keep_rows=keep), sample=sample, name=name, version="1.0.0",
                key=keypair.private, out_dir=out)
        for name, keep in (("rowsum", True), ("total", False))
    ]  # fmt: skip


@pytest.fixture
def summing_home(home: Path, summing_bundles: list[Path], keypair: KeyPair) -> Path:
    for bundle in summing_bundles:
        assert main(["-q", "publish", str(bundle)]) == 0
    for name in ("rowsum", "total"):
        assert main(["-q", "install", name, "--key", str(keypair.pub_path)]) == 0
    return home


def body(rows: Any, *, request_id: str | None = None, binary: bool = False) -> bytes:
    array = np.asarray(rows, dtype=np.float32)
    tensor = {"name": "x", "shape": list(array.shape), "datatype": "FP32", "data": array.tolist()}
    doc: dict[str, Any] = {"inputs": [tensor]}
    if request_id is not None:
        doc["id"] = request_id
    if binary:
        doc["parameters"] = {"binary_data_output": True}
    return json.dumps(doc).encode()


def together(
    home: Path,
    name: str,
    bodies: Sequence[bytes],
    most: int,
    *,
    cancel_first: bool = False,
    later: Sequence[Sequence[bytes]] = (),
) -> list[Any]:
    """Answers (status, document) to ``bodies``, all started in one turn of the event loop
    of an application batching at most ``most`` rows (``cancel_first``: the first request's
    task is cancelled in the next turn, and answers None), then to each wave of ``later``
    bodies, started one turn after the wave before (as if read by the next poll)."""
    app = build_app(Served(Store(home), [name], threads=1), Limits(max_batch_size=most), warn=print)

    async def one(data: bytes) -> tuple[int, Any]:
        sent: list[Any] = []
        messages = [{"type": "http.request", "body": data, "more_body": False}]

        async def receive() -> Any:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # the client says no more: it waits for the answer

        async def send(message: Any) -> None:
            sent.append(message)

        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        scope = {"type": "http", "method": "POST", "path": f"/v2/models/{name}/infer"}
        await app({**scope, "headers": headers}, receive, send)
        status, data = sent[0]["status"], sent[1]["body"]
        length = dict(sent[0]["headers"]).get(b"inference-header-content-length")
        if length is None:
            return status, json.loads(data)
        return status, {**json.loads(data[: int(length)]), "binary": data[int(length) :]}

    async def all_of_them() -> list[Any]:
        tasks = [asyncio.ensure_future(one(data)) for data in bodies]
        for wave in later:
            await asyncio.sleep(0)
            tasks += [asyncio.ensure_future(one(data)) for data in wave]
        if cancel_first:
            await asyncio.sleep(0)  # the requests are read, the first began a batch
            tasks[0].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return [None if isinstance(d, asyncio.CancelledError) else d for d in done]

    return asyncio.run(all_of_them())


def ys(answers: Sequence[tuple[int, Any]]) -> list[list[float]]:
    assert all(status == 200 for status, _ in answers), answers
    return [doc["outputs"][0]["data"] for _, doc in answers]


def test_requests_read_together_run_as_one_batch_and_get_their_own_rows(
    summing_home: Path,
) -> None:
    rows = [[1, 2], [10, 20], [100, 200]]
    bodies = [body([row], request_id=f"r{i}") for i, row in enumerate(rows)]
    # Alone, each row gets its own sum: twice itself.
    assert ys(together(summing_home, "rowsum", bodies, 1)) == [[2, 4], [20, 40], [200, 400]]
    # Together, each gets the sum of the three.
    answers = together(summing_home, "rowsum", bodies, 8)
    assert ys(answers) == [[112, 224], [121, 242], [211, 422]]
    assert [doc["id"] for _, doc in answers] == ["r0", "r1", "r2"]
    assert all(doc["outputs"][0]["shape"] == [1, 2] for _, doc in answers)


def test_requests_read_by_the_next_poll_join_the_batch_and_later_ones_do_not(
    summing_home: Path,
) -> None:
    first = [body([[1, 1]]), body([[2, 2]])]
    # [3, 3] comes one turn later (while the batch waits), [4, 4] once it has run.
    answers = together(summing_home, "rowsum", first, 8, later=[[body([[3, 3]])], [body([[4, 4]])]])
    # The first three ran together, each plus the sum (6, 6); the last alone, plus itself.
    assert ys(answers) == [[7, 7], [8, 8], [9, 9], [8, 8]]


def test_when_the_first_request_goes_away_in_its_second_turn_the_others_run_alone(
    summing_home: Path,
) -> None:
    # [3, 3] joins one turn later; the first request is cancelled in the turn after that,
    # while its batch waits for the second time.
    answers = together(
        summing_home, "rowsum", [body([[1, 1]]), body([[2, 2]])], 8,
        later=[[body([[3, 3]])]], cancel_first=True,
    )  # fmt: skip
    assert answers[0] is None
    assert ys(answers[1:]) == [[4, 4], [6, 6]]


def test_each_request_of_a_batch_gets_its_rows_in_the_form_it_asked_for(
    summing_home: Path,
) -> None:
    bodies = [body([[1, 2]]), body([[10, 20], [30, 40]], binary=True), body([[100, 200]])]
    (s0, first), (s1, second), (s2, third) = together(summing_home, "rowsum", bodies, 8)
    assert (s0, s1, s2) == (200, 200, 200)
    # The sum of the batch's rows, (141, 262), added to each request's own.
    assert first["outputs"][0]["data"] == [142, 264]
    assert third["outputs"][0]["data"] == [241, 462]
    assert second["outputs"][0]["parameters"] == {"binary_data_size": 16}
    values = np.frombuffer(second["binary"], dtype="<f4").reshape(second["outputs"][0]["shape"])
    assert values.tolist() == [[151, 282], [171, 302]]


def test_a_batch_holds_at_most_the_rows_allowed(summing_home: Path) -> None:
    bodies = [body([[1, 1]]), body([[2, 2], [3, 3]]), body([[4, 4]]), body([[5, 5]])]
    # 1 + 2 rows fill the first batch; the next two run together.
    answers = ys(together(summing_home, "rowsum", bodies, 3))
    assert answers == [[7, 7], [8, 8, 9, 9], [13, 13], [14, 14]]
    # A request of more rows than a batch holds runs alone.
    big = [[1, 1], [2, 2], [3, 3], [4, 4]]
    assert ys(together(summing_home, "rowsum", [body(big), body([[9, 9]])], 3)) == [
        [11, 11, 12, 12, 13, 13, 14, 14],
        [18, 18],
    ]


def test_when_the_request_that_began_a_batch_goes_away_the_others_run_alone(
    summing_home: Path,
) -> None:
    bodies = [body([[1, 1]]), body([[2, 2]]), body([[3, 3]])]
    answers = together(summing_home, "rowsum", bodies, 8, cancel_first=True)
    assert answers[0] is None
    assert ys(answers[1:]) == [[4, 4], [6, 6]]


def test_requests_of_other_shapes_run_apart(summing_home: Path) -> None:
    bodies = [body([[1, 1]]), body([[1, 1, 1]]), body([[2, 2]]), body([[2, 2, 2]])]
    answers = ys(together(summing_home, "rowsum", bodies, 8))
    assert answers == [[4, 4], [4, 4, 4], [5, 5], [5, 5, 5]]


def test_a_request_of_no_rows_runs_alone(summing_home: Path) -> None:
    answers = together(
        summing_home, "rowsum", [body([[1, 1]]), body(np.zeros((0, 2))), body([[2, 2]])], 8
    )
    assert ys(answers) == [[4, 4], [], [5, 5]]
    assert answers[1][1]["outputs"][0]["shape"] == [0, 2]


def test_a_model_whose_outputs_are_not_by_row_is_not_batched(summing_home: Path) -> None:
    bodies = [body([[1, 2]]), body([[10, 20], [30, 40]]), body(np.zeros((0, 2)))]
    assert ys(together(summing_home, "total", bodies, 8)) == [[1, 2], [40, 60], [0, 0]]


def test_a_refused_request_takes_no_part_in_its_batch(summing_home: Path) -> None:
    missing = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, None]}]}
    ).encode()
    unknown_output = json.dumps(
        {**json.loads(body([[3, 3]])), "outputs": [{"name": "nope"}]}
    ).encode()
    answers = together(
        summing_home, "rowsum", [body([[1, 1]]), missing, unknown_output, body([[2, 2]])], 8
    )
    assert [status for status, _ in answers] == [200, 400, 400, 200]
    assert "missing" in answers[1][1]["error"]
    assert "no output 'nope'" in answers[2][1]["error"]
    # The missing value was refused before the batch ran; the unknown output once it had.
    assert answers[0][1]["outputs"][0]["data"] == [7, 7]
    assert answers[3][1]["outputs"][0]["data"] == [8, 8]


@pytest.fixture
def iris_home_too(summing_home: Path, bundles: dict[str, Path], keypair: KeyPair) -> Path:
    assert main(["-q", "publish", str(bundles["1.1.0"])]) == 0
    assert main(["-q", "install", "iris@1.1.0", "--key", str(keypair.pub_path)]) == 0
    return summing_home


def iris_body(row: Sequence[float], request_id: str) -> bytes:
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": list(row)}
    return json.dumps({"id": request_id, "inputs": [tensor]}).encode()


def hammer(address: str, iris_rows: np.ndarray) -> list[tuple[int, list[float], Any]]:
    """16 clients at once, 40 requests each to rowsum then iris: (iris row, rowsum's row
    and the sum it answered with, iris's answer) per request."""
    import http.client

    host, port = address.rsplit(":", 1)
    seen: list[tuple[int, list[float], Any]] = []

    def client(k: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        for i in range(40):
            row = [1000.0 * k + i, 1.0]  # the 1s add up to the rows of its batch
            connection.request("POST", "/v2/models/rowsum/infer", body([row]))
            got = json.loads(connection.getresponse().read())["outputs"][0]["data"]
            index = (40 * k + i) % len(iris_rows)
            request = iris_body(iris_rows[index].tolist(), f"{k}.{i}")
            connection.request("POST", "/v2/models/iris/infer", request)
            answer = json.loads(connection.getresponse().read())
            assert answer["id"] == f"{k}.{i}"
            summed = [a - b for a, b in zip(got, row, strict=True)]
            seen.append((index, [*row, *summed], answer["outputs"]))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(seen) == 16 * 40
    return seen


def test_a_batching_server_under_concurrent_clients_answers_each_its_own_rows(
    iris_home_too: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """`packager serve --max-batch-size 64` under 16 clients at once: requests ran together
    (rowsum's sums hold other requests' rows), and each iris answer is that row's answer
    alone, with its own id; without the option, no request runs with another."""
    rows = iris[0].astype(np.float32)
    alone = together(iris_home_too, "iris", [iris_body(r, "a") for r in rows.tolist()], 1)
    with running(iris_home_too, "--max-batch-size", "64") as server:
        seen = hammer(server.address, rows)
    batch_rows = [summed[3] for _, summed, _ in seen]
    assert max(batch_rows) > 1, "no request ran in a batch with another"
    for index, (row0, _, sum0, count), outputs in seen:
        assert count == int(count) >= 1 and sum0 >= row0
        expected = alone[index][1]["outputs"]
        assert outputs[0] == expected[0]  # the label
        assert np.allclose(outputs[1]["data"], expected[1]["data"], rtol=1e-5, atol=1e-7)
    with running(iris_home_too) as server:
        seen = hammer(server.address, rows)
    assert {summed[3] for _, summed, _ in seen} == {1.0}


def test_the_batch_size_is_at_least_one(home: Path) -> None:
    assert main(["serve", "--max-batch-size", "0"]) == 2
