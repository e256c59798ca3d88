"""`packager serve`: the Open Inference Protocol v2 REST API, judged by tritonclient's HTTP
client and curl against a real server process on 127.0.0.1."""

from __future__ import annotations

import configparser
import contextlib
import http.client
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as tritonclient_http
from tritonclient.utils import InferenceServerException

from packager.build.api import package
from packager.cli import main

from .conftest import KeyPair
from .serving import Server, running, serve_env

pytestmark = pytest.mark.slow

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
OFFSETS = {"1.0.0": 0.0, "2.0.0": 100.0}


def publish(*bundles: Path) -> None:
    for bundle in bundles:
        assert main(["-q", "publish", str(bundle)]) == 0


def install(ref: str, keypair: KeyPair) -> None:
    assert main(["-q", "install", ref, "--key", str(keypair.pub_path)]) == 0


def promote(ref: str, keypair: KeyPair, channel: str = "stable") -> None:
    """Point ``channel`` of the default registry at ``ref``, signed by ``keypair``."""
    command = ["-q", "promote", ref, "--channel", channel, "--key", str(keypair.key_path)]
    assert main(command) == 0


@pytest.fixture(scope="module")
def lin_models(iris: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Two linear regressions whose answers differ by 100: which version answered shows."""
    from sklearn.linear_model import LinearRegression

    X, y = iris
    return {v: LinearRegression().fit(X, y + offset) for v, offset in OFFSETS.items()}


@pytest.fixture(scope="module")
def lin_bundles(
    lin_models: dict[str, Any],
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("lin")
    sample = iris[0][::5]
    return {
        v: package(m, sample=sample, name="lin", version=v, key=keypair.private, out_dir=out)
        for v, m in lin_models.items()
    }


@pytest.fixture(scope="module")
def shop() -> tuple[Any, Any]:
    """A DataFrame model: a text column (one-hot encoded) and a number column, two inputs."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"color": rng.choice(["red", "blue"], 60), "size": rng.normal(10, 3, 60)})
    labels = np.where(frame["size"] + 3 * (frame["color"] == "red") > 11, 1, 0)
    columns = ColumnTransformer(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("scale", StandardScaler(), ["size"]),
        ]
    )
    model = Pipeline([("columns", columns), ("classify", LogisticRegression())]).fit(frame, labels)
    return model, frame


@pytest.fixture(scope="module")
def shop_bundle(
    shop: tuple[Any, Any], keypair: KeyPair, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    model, frame = shop
    out = tmp_path_factory.mktemp("shop")
    return package(
        model, sample=frame, name="shop", version="1.0.0", key=keypair.private, out_dir=out
    )


@pytest.fixture
def iris_home(home: Path, bundles: dict[str, Path], keypair: KeyPair) -> Path:
    """iris 1.0.0 and 1.1.0 installed, 1.1.0 current."""
    publish(bundles["1.0.0"], bundles["1.1.0"])
    install("iris@1.0.0", keypair)
    install("iris@1.1.0", keypair)
    return home


def curl(*args: str) -> tuple[int, Any]:
    """curl ARGS: the HTTP status and the JSON body."""
    if shutil.which("curl") is None:
        if os.environ.get("CI"):
            pytest.fail("curl is not installed (.ci/run installs it)")
        pytest.skip("curl is not installed")
    result = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, status = result.stdout.rsplit("\n", 1)
    return int(status), json.loads(body)


def infer_doc(name: str, rows: np.ndarray) -> str:
    return json.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": name, "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
            ],
        }
    )


def triton_input(name: str, array: np.ndarray, datatype: str, *, binary: bool) -> Any:
    tensor = tritonclient_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# -- the protocol, judged by tritonclient ------------------------------------------------


def test_tritonclient_reads_health_metadata_and_infers(
    iris_home: Path, iris_model: Any, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = iris[0][[0, 60, 120, 77]].astype(np.float32)
    with running(iris_home) as server:
        assert server.first_line.startswith("serving iris@1.1.0 on http://127.0.0.1:")
        client = tritonclient_http.InferenceServerClient(server.address)
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("iris")
        assert client.is_model_ready("iris", "1.0.0")
        assert not client.is_model_ready("nope")
        assert client.get_server_metadata()["extensions"] == ["binary_tensor_data"]
        metadata = client.get_model_metadata("iris")
        assert metadata["name"] == "iris"
        assert metadata["versions"] == ["1.0.0", "1.1.0"]
        assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
        assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
            ("label", "INT64"),
            ("probabilities", "FP32"),
        ]
        for binary in (True, False):  # the binary tensor extension, and JSON data
            result = client.infer("iris", [triton_input("input", rows, "FP32", binary=binary)])
            assert result.as_numpy("label").tolist() == iris_model.predict(rows).tolist()
            np.testing.assert_allclose(
                result.as_numpy("probabilities"), iris_model.predict_proba(rows), atol=1e-5
            )
            assert result.get_response()["model_version"] == "1.1.0"
        wanted = [tritonclient_http.InferRequestedOutput("label", binary_data=False)]
        older = client.infer(
            "iris",
            [triton_input("input", rows, "FP32", binary=True)],
            model_version="1.0.0",
            outputs=wanted,
            request_id="abc",
        )
        response = older.get_response()
        assert (response["model_version"], response["id"]) == ("1.0.0", "abc")
        assert [o["name"] for o in response["outputs"]] == ["label"]


def test_outputs_asked_for_as_binary_data_follow_the_json(
    iris_home: Path, iris_model: Any, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = iris[0][[0, 60, 120]].astype(np.float32)
    labels = iris_model.predict(rows).tolist()
    probabilities = iris_model.predict_proba(rows)
    with running(iris_home) as server:
        client = tritonclient_http.InferenceServerClient(server.address)
        # Naming no output, tritonclient asks for every one as binary data.
        result = client.infer("iris", [triton_input("input", rows, "FP32", binary=True)])
        for name in ("label", "probabilities"):
            output = result.get_output(name)
            assert "data" not in output and output["parameters"]["binary_data_size"] > 0
        assert result.as_numpy("label").tolist() == labels
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-5)
        # An output's own choice; the order asked for is the order of the bytes.
        wanted = [
            tritonclient_http.InferRequestedOutput("probabilities", binary_data=True),
            tritonclient_http.InferRequestedOutput("label", binary_data=False),
        ]
        mixed = client.infer(
            "iris", [triton_input("input", rows, "FP32", binary=False)], outputs=wanted
        )
        assert [o["name"] for o in mixed.get_response()["outputs"]] == ["probabilities", "label"]
        assert mixed.get_output("label")["data"] == labels
        assert mixed.get_output("probabilities")["parameters"] == {"binary_data_size": 36}
        np.testing.assert_allclose(mixed.as_numpy("probabilities"), probabilities, atol=1e-5)

        # On the wire: the JSON answer, then the bytes, little-endian; the request's
        # binary_data_output is overridden by an output's own binary_data.
        doc = json.loads(infer_doc("input", rows))
        doc["parameters"] = {"binary_data_output": True}
        doc["outputs"] = [
            {"name": "label", "parameters": {"binary_data": False}},
            {"name": "probabilities"},
        ]
        host, port = server.address.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/v2/models/iris/infer", json.dumps(doc))
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status == 200
        assert response.headers["content-type"] == "application/octet-stream"
        length = int(response.headers["inference-header-content-length"])
        assert int(response.headers["content-length"]) == len(body) == length + 36
        head = json.loads(body[:length])
        assert head["id"] == "r1" and head["outputs"][0]["data"] == labels
        assert head["outputs"][1] == {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [3, 3],
            "parameters": {"binary_data_size": 36},
        }
        tail = np.frombuffer(body[length:], dtype="<f4").reshape(3, 3)
        np.testing.assert_allclose(tail, probabilities, atol=1e-5)

        good = doc["inputs"]
        for bad in (
            {"parameters": {"binary_data_output": "yes"}},
            {"parameters": [True]},
            {"outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
            {"outputs": [{"name": "label", "parameters": "binary"}]},
        ):
            status, answer = curl(
                "-X", "POST", "--data-binary", json.dumps({"inputs": good, **bad}),
                f"{server.url}/v2/models/iris/infer",
            )  # fmt: skip
            assert status == 400 and set(answer) == {"error"}, bad
    assert not any("Traceback" in line for line in server.stderr)


def text_model(shape: tuple[str | int, ...] = ("N", 1)) -> Any:
    """y = x, text of ``shape``: a BYTES output."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.STRING, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.STRING, list(shape))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "text", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_text_output_as_binary_data_is_read_by_tritonclient(
    home: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    sample = np.array([["a"], ["b"]], dtype=object)
    bundle = package(
        text_model(), sample=sample, name="text", version="1.0.0", key=keypair.private,
        out_dir=tmp_path,
    )  # fmt: skip
    publish(bundle)
    install("text@1.0.0", keypair)
    words = np.array([["café"], ["two words"], ["x" * 300]], dtype=object)
    with running(home) as server:
        client = tritonclient_http.InferenceServerClient(server.address)
        for binary in (True, False):
            wanted = [tritonclient_http.InferRequestedOutput("y", binary_data=binary)]
            result = client.infer(
                "text", [triton_input("x", words, "BYTES", binary=True)], outputs=wanted
            )
            assert ("data" not in result.get_output("y")) is binary
            got = result.as_numpy("y")
            assert got.shape == (3, 1)
            assert [v.decode() if binary else v for v in got.ravel()] == list(words.ravel())


def test_text_and_several_inputs_of_a_dataframe_model(
    home: Path, shop: tuple[Any, Any], shop_bundle: Path, keypair: KeyPair
) -> None:
    model, frame = shop
    publish(shop_bundle)
    install("shop@1.0.0", keypair)
    rows = frame.iloc[:7]
    colors = rows["color"].to_numpy(dtype=object).reshape(-1, 1)
    sizes = rows["size"].to_numpy(dtype=np.float32).reshape(-1, 1)
    expected = model.predict(rows).tolist()
    with running(home) as server:
        client = tritonclient_http.InferenceServerClient(server.address)
        inputs = {i["name"]: i for i in client.get_model_metadata("shop")["inputs"]}
        assert inputs["color"] == {"name": "color", "datatype": "BYTES", "shape": [-1, 1]}
        assert inputs["size"]["datatype"] == "FP32"
        for binary in (True, False):
            tensors = [
                triton_input("color", colors, "BYTES", binary=binary),
                triton_input("size", sizes, "FP32", binary=binary),
            ]
            assert client.infer("shop", tensors).as_numpy("label").tolist() == expected
        blank = colors.copy()
        blank[2, 0] = ""
        tensors = [
            triton_input("color", blank, "BYTES", binary=True),
            triton_input("size", sizes, "FP32", binary=True),
        ]
        with pytest.raises(InferenceServerException) as refused:
            client.infer("shop", tensors)
        assert refused.value.status() == "400"
        assert "row 2 is missing (empty)" in refused.value.message()


def test_a_long_text_among_short_ones_takes_memory_by_its_size(
    home: Path, shop_bundle: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    """Text is kept as the strings it came as: as numpy's own string array every element
    would take the room of the longest (here 1,000 x 200,000 characters x 4 bytes). Two
    columns of a DataFrame model, and a model of one text input of rank 1."""
    publish(shop_bundle)
    sample = {"x": np.array(["a", "b"], dtype=object)}
    words = package(
        text_model(("N",)), sample=sample, name="words", version="1.0.0",
        key=keypair.private, out_dir=tmp_path,
    )  # fmt: skip
    publish(words)
    install("shop@1.0.0", keypair)
    install("words@1.0.0", keypair)
    colors = ["red" * 66_667] + ["red", "blue"] * 500
    tensors = [
        {"name": "color", "shape": [1001, 1], "datatype": "BYTES", "data": colors},
        {"name": "size", "shape": [1001, 1], "datatype": "FP32", "data": [10.0] * 1001},
    ]
    flat = [{"name": "x", "shape": [1001], "datatype": "BYTES", "data": colors}]
    with running(home) as server:
        host, port = server.address.rsplit(":", 1)
        before = rss_kib(server.process.pid, "VmHWM")
        for model, inputs in (("shop", tensors), ("words", flat)):
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            connection.request("POST", f"/v2/models/{model}/infer", json.dumps({"inputs": inputs}))
            assert connection.getresponse().status == 200, model
            connection.close()
        client = tritonclient_http.InferenceServerClient(server.address)
        column = np.array(colors, dtype=object).reshape(-1, 1)
        sizes = np.full((1001, 1), 10.0, dtype=np.float32)
        binary = [
            triton_input("color", column, "BYTES", binary=True),
            triton_input("size", sizes, "FP32", binary=True),
        ]
        assert client.infer("shop", binary).as_numpy("label").shape == (1001,)
        assert rss_kib(server.process.pid, "VmHWM") - before < 100 << 10  # KiB


def test_inputs_of_different_rows_are_refused_with_the_protocol_body(
    home: Path, shop_bundle: Path, keypair: KeyPair
) -> None:
    publish(shop_bundle)
    install("shop@1.0.0", keypair)

    def doc(colors: list[str], sizes: list[float]) -> str:
        tensors = [
            {"name": "color", "shape": [len(colors), 1], "datatype": "BYTES", "data": colors},
            {"name": "size", "shape": [len(sizes), 1], "datatype": "FP32", "data": sizes},
        ]
        return json.dumps({"inputs": tensors})

    with running(home) as server:
        url = f"{server.url}/v2/models/shop/infer"
        status, body = curl("-X", "POST", "--data-binary", doc(["red"], [10.0]), url)
        assert status == 200 and body["outputs"][0]["shape"] == [1]
        # Rows the model fails on (onnxruntime's Concat), and a row without its colour.
        for colors, sizes in ((["red", "blue"], [10.0, 12.0, 13.0]), ([], [10.0])):
            status, body = curl("-X", "POST", "--data-binary", doc(colors, sizes), url)
            assert status == 400, (colors, sizes)
            assert set(body) == {"error"}
            rows = f"'color' has {len(colors)}, 'size' has {len(sizes)}"
            assert rows in body["error"]
    assert not any("failed" in line for line in server.stderr)


# -- curl, and the protocol's errors ----------------------------------------------------


def test_curl_infers_and_errors_have_the_protocol_body(
    iris_home: Path, iris_model: Any, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = iris[0][[0, 100]].astype(np.float32)
    with running(iris_home) as server:
        url = server.url
        status, body = curl(f"{url}/v2/health/ready")
        assert (status, body) == (200, {"ready": True})
        status, body = curl(
            "-X", "POST", "--data", infer_doc("input", rows), f"{url}/v2/models/iris/infer"
        )
        assert status == 200
        assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "1.1.0", "r1")
        assert body["outputs"][0] == {
            "name": "label",
            "datatype": "INT64",
            "shape": [2],
            "data": iris_model.predict(rows).tolist(),
        }

        def post(doc: object, path: str = "/v2/models/iris/infer") -> tuple[int, Any]:
            data = doc if isinstance(doc, str) else json.dumps(doc)
            return curl("-X", "POST", "--data-binary", data, url + path)

        good = json.loads(infer_doc("input", rows))["inputs"][0]
        bad: dict[str, object] = {
            "not json": "{",
            "no inputs": {"id": "x"},
            "a duplicate key": '{"inputs": [], "inputs": []}',
            "FP64 for an FP32 input": {"inputs": [{**good, "datatype": "FP64"}]},
            "three columns": {"inputs": [{**good, "shape": [2, 3]}]},
            "too few values": {"inputs": [{**good, "data": [1.0, 2.0]}]},
            "text for numbers": {"inputs": [{**good, "data": ["a"] * 8}]},
            "an unknown input": {"inputs": [good, {**good, "name": "other"}]},
            "no input at all": {"inputs": []},
            "a missing value": {"inputs": [{**good, "data": [None] + [1.0] * 7}]},
            "an unknown output": {"inputs": [good], "outputs": [{"name": "nope"}]},
            "an output twice": {"inputs": [good], "outputs": [{"name": "label"}] * 2},
            "a bool shape": {"inputs": [{**good, "shape": [True, 4]}]},
            "an id that is not valid Unicode": {"id": "\ud800", "inputs": [good]},
        }
        for why, doc in bad.items():
            status, body = post(doc)
            assert status == 400, why
            assert set(body) == {"error"} and body["error"], why
        status, body = post(doc=bad["a missing value"])
        assert "is missing (NaN)" in body["error"]
        status, body = post(doc=bad["an output twice"])
        assert body == {"error": "output 'label' is given twice"}
        status, body = post({"inputs": [{**good, "data": [1e39] + [1.0] * 7}]})
        assert status == 400 and "out of the range of FP32" in body["error"]
        status, body = curl(f"{url}/v2/models/iris/infer")  # GET
        assert status == 405 and set(body) == {"error"}
        assert post(good, "/v2/models/nope/infer")[0] == 404
        assert post({"inputs": [good]}, "/v2/models/iris/versions/9.0.0/infer")[0] == 404
        assert curl(f"{url}/v2/models/iris/versions/9.0.0")[0] == 404
        status, body = curl(f"{url}/v2/models/iris/versions/1.0.0")
        assert (status, body["versions"]) == (200, ["1.0.0"])
    assert not any("Traceback" in line for line in server.stderr)


# What `curl --http2` and Java's HttpClient send with a request on plain http: an offer to
# go on in HTTP/2 (h2c), which the server may ignore (RFC 9110 §7.8).
H2C = (
    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)


def test_curl_offering_http2_is_answered_in_http1_with_its_body_read(
    iris_home: Path, iris_model: Any, iris: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    small = iris[0][[0, 60, 120]].astype(np.float32)
    large = np.tile(iris[0], (20, 1)).astype(np.float32)  # a body of many reads
    (tmp_path / "large.json").write_text(infer_doc("input", large))
    with running(iris_home) as server:
        url = f"{server.url}/v2/models/iris/infer"
        assert curl("--http2", f"{server.url}/v2/health/live") == (200, {"live": True})
        for rows, data in ((small, infer_doc("input", small)), (large, f"@{tmp_path}/large.json")):
            for framing in ((), ("-H", "Transfer-Encoding: chunked")):  # Content-Length, chunked
                status, body = curl("--http2", *framing, "-X", "POST", "--data-binary", data, url)
                assert status == 200, (framing, body)
                assert body["outputs"][0]["data"] == iris_model.predict(rows).tolist()
    assert not any("Traceback" in line for line in server.stderr)


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, Any]]:
    """The status and JSON body of the next ``count`` responses on ``sock``, read with one
    reader: a reader of its own per response could take the start of the next one (and
    http.client's response closes its reader as it goes)."""
    reader = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline()) != b"\r\n":
            name, _, value = line.partition(b":")
            headers[name.lower()] = value.strip()
        answers.append((status, json.loads(reader.read(int(headers[b"content-length"])))))
    return answers


def test_a_request_offering_an_upgrade_keeps_its_body_and_its_connection(
    iris_home: Path, iris_model: Any, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """The parser stops at the end of the head of a request that offers an upgrade; its
    body, chunked or not, is still that request's, and the requests after it on the
    connection are answered, whether they come in the same read or later ones."""
    first, second = iris[0][[0, 60]].astype(np.float32), iris[0][[120]].astype(np.float32)
    body = infer_doc("input", first).encode()
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    head = (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{H2C}Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    sized = raw_head(len(body), H2C) + body
    after = infer_request(infer_doc("input", second).encode())
    expected = [iris_model.predict(rows).tolist() for rows in (first, first, second)]
    with running(iris_home) as server:
        sock = connect(server)
        sock.sendall(head + chunks + sized + after)  # in one read
        answers = read_responses(sock, 3)
        assert [status for status, _ in answers] == [200] * 3, answers
        assert [answer["outputs"][0]["data"] for _, answer in answers] == expected
        for parts in ([head, chunks + after], [head, chunks[:12], chunks[12:], after]):
            for part in parts:  # a read each
                sock.sendall(part)
                time.sleep(0.1)
            answers = read_responses(sock, 2)
            assert [answer["outputs"][0]["data"] for _, answer in answers] == expected[1:]
        sock.close()
    assert not any("Traceback" in line for line in server.stderr)


def ask(server: Server, method: str, path: str) -> tuple[int, Any, bytes]:
    """METHOD PATH (a POST with an empty JSON object): status, headers and body, which must
    be JSON."""
    host, port = server.address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, path, b"{}" if method == "POST" else None)
        response = connection.getresponse()
        answer = (response.status, response.headers, response.read())
    finally:
        connection.close()
    assert answer[1]["content-type"] == "application/json", (method, path[:60])
    return answer


def test_unknown_paths_and_methods_have_the_protocol_body(iris_home: Path) -> None:
    with running(iris_home) as server:
        for method, path in [
            ("GET", "/nope"),
            ("POST", "/nope"),
            ("GET", "/v2/models/iris/versions/a%2Fb"),
            ("POST", "/v2/models/iris/versions/a%2Fb/infer"),
            # A trailing slash is another path: no redirect (to the Host a client sent).
            ("GET", "/v2/health/live/"),
            ("GET", "/v2/"),
            ("GET", "/v2/models/iris/ready/"),
            ("POST", "/v2/models/iris/infer/"),
        ]:
            status, headers, body = ask(server, method, path)
            assert status == 404, (method, path)
            assert set(json.loads(body)) == {"error"}
            assert "location" not in headers
        status, headers, body = ask(server, "POST", "/v2/models/iris/ready")
        assert status == 405 and set(json.loads(body)) == {"error"}
        assert "GET" in headers["allow"]
    assert not any("Traceback" in line for line in server.stderr)


def test_a_long_version_or_name_is_repeated_only_so_far(iris_home: Path) -> None:
    long = "x" * 5000
    with running(iris_home) as server:
        for method, path in [
            ("POST", f"/v2/models/iris/versions/{long}/infer"),
            ("GET", f"/v2/models/iris/versions/{long}"),
            ("GET", f"/v2/models/iris/versions/{long}/ready"),
            ("POST", f"/v2/models/{long}/infer"),
            ("GET", f"/v2/models/{long}"),
        ]:
            status, _headers, body = ask(server, method, path)
            assert status == 404, (method, path[:40])
            assert len(body) < 400 and "more characters" in json.loads(body)["error"]


def test_unix_socket(iris_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "serve.sock"
    with running(iris_home, "--unix-socket", path) as server:
        assert server.url == f"unix:{path}"
        status, body = curl("--unix-socket", str(path), "http://localhost/v2/models/iris/ready")
        assert (status, body) == (200, {"name": "iris", "ready": True})
        second = subprocess.run(
            [sys.executable, "-m", "packager", "serve", "--unix-socket", str(path)],
            capture_output=True,
            text=True,
            env=serve_env(iris_home),
            timeout=120,
        )
        assert second.returncode == 2  # the socket of a live server is not taken over
        assert "another server listens there" in second.stderr
        assert curl("--unix-socket", str(path), "http://localhost/v2/health/live")[0] == 200
    assert not path.exists()  # a server that stops removes its socket
    # The socket a killed server left behind is taken over.
    with running(iris_home, "--unix-socket", path) as server:
        server.process.kill()
        server.process.wait(30)
    assert path.is_socket()
    with running(iris_home, "--unix-socket", path):
        assert curl("--unix-socket", str(path), "http://localhost/v2/health/live")[0] == 200
    # Nothing else is: a file, or a link.
    assert not path.exists()
    path.write_text("notes")
    link = tmp_path / "link.sock"
    link.symlink_to(tmp_path / "elsewhere.sock")
    for taken in (path, link):
        refused = subprocess.run(
            [sys.executable, "-m", "packager", "serve", "--unix-socket", str(taken)],
            capture_output=True,
            text=True,
            env=serve_env(iris_home),
            timeout=120,
        )
        assert refused.returncode == 2
        assert refused.stderr.strip().endswith("it exists and is not a socket")
    assert path.read_text() == "notes" and link.is_symlink()


def test_models_not_installed_are_refused_before_listening(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "packager", "serve", "iris", "--port", "0"],
        capture_output=True,
        text=True,
        env=serve_env(home),
        timeout=120,
    )
    assert result.returncode == 2  # not installed here: a usage error
    assert result.stdout == ""
    assert "iris is not installed" in result.stderr


# -- limits and shutdown ----------------------------------------------------------------


def raw_request(server: Server, body: bytes, *, send: int) -> socket.socket:
    """A connection that has sent the headers of an infer request and ``send`` bytes of it."""
    host, port = server.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:send])
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    reader = sock.makefile("rb")
    response = http.client.HTTPResponse(sock)
    response.fp = reader
    response.begin()
    body = response.read()
    return response.status, dict(response.getheaders()), json.loads(body)


def test_request_size_limit(iris_home: Path, iris: tuple[np.ndarray, np.ndarray]) -> None:
    small = infer_doc("input", iris[0][:2].astype(np.float32))
    large = infer_doc("input", iris[0][:40].astype(np.float32))
    assert len(small) < 1024 < len(large)
    with running(iris_home, "--max-request-size", "1K") as server:
        url = f"{server.url}/v2/models/iris/infer"
        assert curl("-X", "POST", "--data", small, url)[0] == 200
        status, body = curl("-X", "POST", "--data", large, url)
        assert status == 413
        assert "larger than 1024 bytes" in body["error"]
        # Without a Content-Length (chunked), the body is cut off as it grows past the limit.
        chunked = ("-H", "Transfer-Encoding: chunked", "-X", "POST", "--data", large, url)
        assert curl(*chunked)[0] == 413


def binary_request(rows: np.ndarray) -> bytes:
    """An infer request (head and body) of ``rows`` as binary tensor data, asking for labels."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [{"name": "label"}],
        }
    ).encode()
    body = header + rows.tobytes()
    head = (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def connect(server: Server) -> socket.socket:
    host, port = server.address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=120)


def test_the_inference_header_length_is_ascii_digits_only(
    iris_home: Path, iris_model: Any, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """Python's int() would read ``+N`` or ``1_0`` as a length; HTTP writes one in digits."""
    rows = iris[0][:3].astype(np.float32)
    request = binary_request(rows)
    named = b"Inference-Header-Content-Length: "
    length = request.partition(named)[2].partition(b"\r\n")[0]
    with running(iris_home) as server:
        for value in (length, b"0" * 40 + length):  # leading zeros are digits too
            sock = connect(server)
            sock.sendall(request.replace(named + length, named + value))
            status, _headers, answer = read_response(sock)
            assert status == 200, (value, answer)
            assert answer["outputs"][0]["data"] == iris_model.predict(rows).tolist()
            sock.close()
        refused = {
            b"+" + length: "must be a number of bytes (0-9)",
            length[:1] + b"_" + length[1:]: "must be a number of bytes (0-9)",
            length[:1] + b" " + length[1:]: "must be a number of bytes (0-9)",
            "\u0661\u0662".encode(): "must be a number of bytes (0-9)",  # Arabic-Indic
            b"9" * 5000: "is out of range",
        }
        for value, message in refused.items():
            sock = connect(server)
            sock.sendall(request.replace(named + length, named + value))
            status, _headers, answer = read_response(sock)
            assert (status, answer) == (
                400,
                {"error": f"Inference-Header-Content-Length {message}"},
            ), value[:20]
            sock.close()
    assert not any("Traceback" in line for line in server.stderr)


def test_health_is_answered_while_a_large_request_runs(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    small = infer_doc("input", iris[0][:2].astype(np.float32)).encode()
    rows = np.tile(iris[0].astype(np.float32), (20000, 1))  # 3,000,000 rows: 48 MB of FP32
    large = binary_request(rows)
    with running(iris_home, "--max-request-size", "64M") as server:
        # A cheap request first: the next one of this model would run on the event loop.
        assert read_response(raw_request(server, small, send=len(small)))[0] == 200
        host, port = server.address.rsplit(":", 1)
        sock = connect(server)
        sock.sendall(large[:-1])
        health = http.client.HTTPConnection(host, int(port), timeout=120)
        health.request("GET", "/v2/health/live")
        assert health.getresponse().read() == b'{"live":true}'
        time.sleep(0.5)  # the server has read all but the last byte
        sock.sendall(large[-1:])
        time.sleep(0.05)  # ... and has that one too: the model is running
        # Health is answered, again and again, while the large request still runs: its
        # answer is not there yet (a server busy with it would answer health after it).
        answered = 0
        while not select.select([sock], [], [], 0)[0] and answered < 20:
            health.request("GET", "/v2/health/live")
            assert health.getresponse().read() == b'{"live":true}'
            answered += not select.select([sock], [], [], 0)[0]
        assert answered >= 1
        status, _, answer = read_response(sock)
        assert status == 200
        assert answer["outputs"][0]["shape"] == [len(rows)]
        assert not any("Traceback" in line for line in server.stderr)


def test_concurrency_limit_answers_503_with_retry_after(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    body = infer_doc("input", iris[0][:2].astype(np.float32)).encode()
    large = binary_request(np.tile(iris[0].astype(np.float32), (3000, 1)))
    with running(iris_home, "--max-concurrent", "1") as server:
        refused: list[tuple[int, dict[str, str], Any]] = []
        for _ in range(20):
            # A large request running on an inference thread holds the one place: a small
            # request sent meanwhile (once the large one's body is read) is refused.
            running_one = connect(server)
            running_one.sendall(large)
            while not refused and select.select([running_one], [], [], 0)[0] == []:
                answer = read_response(raw_request(server, body, send=len(body)))
                if answer[0] != 200:
                    refused.append(answer)
            assert read_response(running_one)[0] == 200
            if refused:
                break
        status, headers, answer = refused[-1]
        assert (status, headers.get("retry-after")) == (503, "1")
        assert "concurrency limit" in answer["error"]
        again = raw_request(server, body, send=len(body))
        assert read_response(again)[0] == 200


def test_loading_a_version_that_is_not_current_counts_against_the_limit(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """The ready and metadata routes of a version not loaded yet load it, within the
    concurrency limit (each client cycling through versions would otherwise load sessions
    without bound); once loaded, it is answered at the limit too."""
    large = binary_request(np.tile(iris[0].astype(np.float32), (6000, 1)))  # 14 MB
    path = "/v2/models/iris/versions/1.0.0/ready"  # 1.1.0 is current

    def while_one_runs(server: Server) -> list[tuple[int, str | None, bytes]]:
        """GET ``path`` while a large request holds the one place: the answers."""
        host, port = server.address.rsplit(":", 1)
        answers = []
        running_one = connect(server)
        running_one.sendall(large)
        time.sleep(0.02)  # its body read: it holds the place
        while select.select([running_one], [], [], 0)[0] == []:
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            connection.request("GET", path)
            response = connection.getresponse()
            answers.append((response.status, response.getheader("retry-after"), response.read()))
            connection.close()
        assert read_response(running_one)[0] == 200
        return answers

    refused = (503, "1", b'{"error":"the server is at its concurrency limit; retry"}')
    for _ in range(10):  # until a GET came while the place was held, before any loaded it
        with running(iris_home, "--max-concurrent", "1") as server:
            answers = while_one_runs(server)
            if answers and answers[0] == refused:
                status, body = curl(f"{server.url}{path}")  # loads it
                assert (status, body) == (200, {"name": "iris", "ready": True})
                loaded = while_one_runs(server)
                assert loaded and {a[0] for a in loaded} == {200}
                return
    pytest.fail("no GET came while the large request held the place")


def test_clients_that_do_not_send_their_body_hold_no_place(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    body = infer_doc("input", iris[0][:2].astype(np.float32)).encode()
    with running(iris_home, "--max-concurrent", "2", "--read-timeout", "2") as server:
        started = time.monotonic()
        # More clients than places announce a body of 100 bytes and send none of it.
        stalled = [raw_request(server, bytes(100), send=0) for _ in range(3)]
        time.sleep(0.5)  # all in the server, waiting for their bodies
        honest = time.monotonic()
        assert read_response(raw_request(server, body, send=len(body)))[0] == 200
        assert time.monotonic() - honest < 1
        for sock in stalled:
            status, headers, answer = read_response(sock)
            assert (status, headers.get("content-type")) == (408, "application/json")
            assert "not received within 2 seconds" in answer["error"]
            assert sock.recv(1) == b""  # and the connection is closed
        assert 1.5 < time.monotonic() - started < 8
        assert not any("Traceback" in line for line in server.stderr)


def test_the_bodies_being_read_are_bounded_in_all(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """Clients sending bodies slowly hold no place, but what they sent so far is bounded
    in all: a body that would pass --max-reading-size is refused (503, Retry-After) and its
    connection closed; the others finish, and the room is there again once they have."""
    rows = np.tile(iris[0].astype(np.float32), (80, 1))  # 12,000 rows
    body = infer_doc("input", rows).encode()
    assert 500_000 < len(body) < 1_000_000
    limits = ("--max-request-size", "1M", "--max-reading-size", f"{2 * len(body) - 1000}")
    with running(iris_home, *limits) as server:
        slow = [raw_request(server, body, send=len(body) - 2000) for _ in range(2)]
        time.sleep(0.5)  # both bodies all but read: the room is nearly taken
        third = raw_request(server, body, send=len(body))
        status, headers, answer = read_response(third)
        assert (status, headers.get("retry-after")) == (503, "1")
        assert "too many request bodies" in answer["error"]
        with contextlib.suppress(ConnectionResetError):
            assert third.recv(1) == b""  # closed: the rest of its body is not read
        for sock in slow:
            sock.sendall(body[-2000:])
            assert read_response(sock)[0] == 200
        assert read_response(raw_request(server, body, send=len(body)))[0] == 200
        assert not any("Traceback" in line for line in server.stderr)
    # A body the request size allows must fit: else it would be told to retry for ever.
    refused = subprocess.run(
        [sys.executable, "-m", "packager", "serve", "--max-reading-size", "100K"],
        capture_output=True,
        text=True,
        env=serve_env(iris_home),
        timeout=120,
    )
    assert refused.returncode == 2
    assert "--max-reading-size must be at least --max-request-size" in refused.stderr


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Process ``pid``'s resident memory (``VmHWM``: its peak so far), in KiB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def send_until_closed(sock: socket.socket, head: bytes, chunk: bytes, most: int) -> int | None:
    """How many bytes of ``chunk`` after ``head`` went out before the server closed the
    connection; None when all ``most`` did."""
    sent = 0
    try:
        sock.sendall(head)
        while sent < most:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return sent
    return None


def test_what_is_not_http_is_answered_400_with_the_protocol_body_and_not_logged(
    iris_home: Path,
) -> None:
    bad = [
        b"GARBAGE\r\n\r\n",
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    ]
    with running(iris_home) as server:
        for request in bad * 3:
            sock = connect(server)
            sock.sendall(request)
            status, headers, answer = read_response(sock)
            assert (status, headers["content-type"]) == (400, "application/json"), request
            assert answer == {"error": "the request is not valid HTTP/1.1"}
            assert sock.recv(1) == b""  # closed
            sock.close()
        assert server.process.poll() is None
    assert not any("Invalid HTTP" in line for line in server.stderr), server.stderr


def test_endless_headers_are_cut_off(iris_home: Path, iris: tuple[np.ndarray, np.ndarray]) -> None:
    """A connection sending a header line (or header lines) without end is answered 431
    and closed once its request's head passes 64 KiB, on its first request as on a later
    one: it neither grows the server nor holds up the event loop."""
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    attacks = {
        "one line": (b"X-Big: ", b"a" * (64 << 10)),
        "many lines": (b"", b"X-A: b\r\n" * (8 << 10)),
    }
    with running(iris_home) as server:
        pid = server.process.pid
        health = connect(server)
        health.sendall(live)
        assert read_response(health)[0] == 200
        before = rss_kib(pid)
        for start, chunk in attacks.values():
            for earlier in (0, 1):  # on a new connection, after a request on it
                sock = connect(server)
                for _ in range(earlier):
                    sock.sendall(live)
                    assert read_response(sock)[0] == 200
                head = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n" + start
                sent = send_until_closed(sock, head, chunk, 32 << 20)
                # What the socket buffers took before the server closed the connection.
                assert sent is not None, "the server took 32 MiB of headers"
                assert sent < (16 << 20)
                sock.close()
                asked = time.monotonic()
                health.sendall(live)
                assert read_response(health)[0] == 200
                assert time.monotonic() - asked < 1
        assert rss_kib(pid) - before < (8 << 10)  # KiB: 32 MiB of headers would show
        # A head that comes with a large body in the same reads is not cut off.
        sock = connect(server)
        sock.sendall(binary_request(np.tile(iris[0].astype(np.float32), (2000, 1))))
        assert read_response(sock)[0] == 200
        assert server.process.poll() is None
        assert not any("Traceback" in line for line in server.stderr)


def test_endless_headers_are_answered_431(iris_home: Path) -> None:
    with running(iris_home) as server:
        sock = connect(server)
        head = b"GET /v2/health/live HTTP/1.1\r\nX-Big: "
        # One byte over: read whole before the server closes, so the answer is not lost.
        sock.sendall(head.ljust((64 << 10) + 1, b"a"))
        status, headers, answer = read_response(sock)
        assert (status, headers.get("connection")) == (431, "close")
        assert "larger than 65536 bytes" in answer["error"]


# -- the head's deadline ----------------------------------------------------------------

LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
# The read timeout of these tests, and what a sweep of the heads awaited may add to it: one
# tick (a quarter of the timeout), and room for a busy machine.
READ = 1.0
LATE = READ / 4 + 0.5


def assert_head_408(sock: socket.socket) -> None:
    status, headers, answer = read_response(sock)
    assert (status, headers.get("connection")) == (408, "close")
    assert headers.get("content-type") == "application/json"
    assert answer == {"error": "the request's head was not received within 1 seconds"}
    assert sock.recv(1) == b""  # and the connection is closed


def trickle(sock: socket.socket, data: bytes) -> None:
    """Send ``data`` a byte every 0.1 s until the server answers."""
    for i in range(len(data)):
        if select.select([sock], [], [], 0.1)[0]:
            return
        sock.sendall(data[i : i + 1])
    raise AssertionError("the server took a head sent a byte every 0.1 s")


def test_a_connection_that_sends_no_head_is_answered_408_and_closed(iris_home: Path) -> None:
    with running(iris_home, "--read-timeout", f"{READ:g}") as server:
        opened = time.monotonic()
        idle = [connect(server) for _ in range(3)]
        for sock in idle:
            assert_head_408(sock)
        assert READ <= time.monotonic() - opened < READ + LATE
        assert not any("Traceback" in line for line in server.stderr)
        assert server.stderr == []  # nothing logged per connection


def test_a_head_trickled_a_byte_at_a_time_is_answered_408_and_closed(iris_home: Path) -> None:
    """On a new connection the deadline counts from its opening; after a response, from the
    end of that response."""
    slow = b"GET /v2/health/live HTTP/1.1\r\nX-Slow: " + b"a" * 200
    with running(iris_home, "--read-timeout", f"{READ:g}") as server:
        for earlier in (0, 1):
            sock = connect(server)
            started = time.monotonic()
            for _ in range(earlier):
                time.sleep(READ / 2)
                sock.sendall(LIVE)
                assert read_response(sock)[0] == 200
                started = time.monotonic()
            trickle(sock, slow)
            assert READ <= time.monotonic() - started < READ + LATE
            assert_head_408(sock)


def infer_request(body: bytes) -> bytes:
    head = (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_a_keep_alive_connection_has_the_read_timeout_after_each_response(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """Requests in a row with pauses shorter than the read timeout, longer than it in all,
    are answered; a connection idle past it after a response is closed, with nothing sent
    (a 408 could cross a request sent at that moment)."""
    infer = infer_request(infer_doc("input", iris[0][:2].astype(np.float32)).encode())
    with running(iris_home, "--read-timeout", f"{READ:g}") as server:
        sock = connect(server)
        opened = time.monotonic()
        for request in (LIVE, infer, LIVE, infer):
            time.sleep(0.6 * READ)
            sock.sendall(request)
            assert read_response(sock)[0] == 200
        assert time.monotonic() - opened > 2 * READ
        # The pause may also fall within a head: the deadline is the whole head's.
        sock.sendall(infer[:20])
        time.sleep(0.6 * READ)
        sock.sendall(infer[20:])
        assert read_response(sock)[0] == 200
        answered = time.monotonic()
        assert sock.recv(1) == b""
        assert READ <= time.monotonic() - answered < READ + LATE


def test_the_body_keeps_its_own_deadline_once_the_head_is_in(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """A head completed before its deadline leaves it: the body then has the read timeout
    from there (408, the body's message), and the connection is not closed under it."""
    body = infer_doc("input", iris[0][:2].astype(np.float32)).encode()
    request = infer_request(body)
    head = len(request) - len(body)
    with running(iris_home, "--read-timeout", f"{READ:g}") as server:
        sock = connect(server)
        sock.sendall(request[:10])
        time.sleep(0.7 * READ)
        sock.sendall(request[10 : head + 10])
        headed = time.monotonic()
        status, headers, answer = read_response(sock)
        assert (status, headers.get("connection")) == (408, "close")
        assert "request body was not received within 1 seconds" in answer["error"]
        assert READ <= time.monotonic() - headed < READ + LATE
        assert not any("Traceback" in line for line in server.stderr)


def test_a_client_that_leaves_mid_body_frees_its_place(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    body = infer_doc("input", iris[0][:2].astype(np.float32)).encode()
    with running(iris_home, "--max-concurrent", "1") as server:
        for _ in range(3):
            gone = raw_request(server, body, send=10)
            gone.close()
        wait_for(lambda: read_response(raw_request(server, body, send=len(body)))[0] == 200)
        assert server.process.poll() is None
        assert not any("Traceback" in line for line in server.stderr)


def test_sigterm_lets_requests_in_flight_finish(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    body = infer_doc("input", iris[0][:2].astype(np.float32)).encode()
    with running(iris_home) as server:
        host, port = server.address.rsplit(":", 1)
        sock = raw_request(server, body, send=10)
        time.sleep(2)  # the server has read the headers: the request is in flight
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.process.poll() is None  # waiting for the request in flight
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(body[10:])
        status, _, answer = read_response(sock)
        assert (status, answer["model_version"]) == (200, "1.1.0")
        assert server.process.wait(60) == 0


# -- version switches -------------------------------------------------------------------


def lin_home(home: Path, lin_bundles: dict[str, Path], keypair: KeyPair) -> Path:
    publish(*lin_bundles.values())
    install("lin@1.0.0", keypair)
    return home


def wait_for(what: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def lin_version(server: Server, rows: np.ndarray) -> str:
    status, body = curl(
        "-X", "POST", "--data", infer_doc("input", rows), f"{server.url}/v2/models/lin/infer"
    )
    assert status == 200
    return str(body["model_version"])


def test_the_metadata_names_the_outputs_inference_answers(
    home: Path, lin_bundles: dict[str, Path], keypair: KeyPair, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """A regressor's [N, 1] output is answered as its target, [N]: the metadata says so, and
    an output asked for by the name it gives is answered."""
    lin_home(home, lin_bundles, keypair)
    rows = iris[0][:3].astype(np.float32)
    with running(home) as server:
        client = tritonclient_http.InferenceServerClient(server.address)
        (output,) = client.get_model_metadata("lin")["outputs"]
        assert (output["name"], output["shape"]) == ("prediction", [-1])
        wanted = [tritonclient_http.InferRequestedOutput(output["name"], binary_data=False)]
        result = client.infer(
            "lin", [triton_input("input", rows, "FP32", binary=True)], outputs=wanted
        )
        answered = result.get_output(output["name"])
        assert (answered["datatype"], answered["shape"]) == (output["datatype"], [3])


def test_signals_sent_as_soon_as_the_server_says_it_serves_are_taken(iris_home: Path) -> None:
    """Whoever waits for the "serving" line may signal at once: SIGHUP is not fatal then,
    and SIGTERM not lost (the line comes once both have their handlers)."""
    with running(iris_home) as server:
        server.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert server.process.poll() is None
        status, _ = curl(f"{server.url}/v2/health/live")
        assert status == 200
    with running(iris_home) as server:
        assert server.stop(timeout=30) == 0


def test_sighup_switches_at_once(
    home: Path, lin_bundles: dict[str, Path], keypair: KeyPair, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    lin_home(home, lin_bundles, keypair)
    rows = iris[0][:1].astype(np.float32)
    with running(home, "--poll-interval", "3600") as server:
        install("lin@2.0.0", keypair)
        time.sleep(1)
        assert lin_version(server, rows) == "1.0.0"  # no poll for an hour
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: lin_version(server, rows) == "2.0.0")
        assert any("serving lin@2.0.0" in line for line in server.stderr)


def test_an_uninstalled_model_is_no_longer_served_until_installed_again(
    home: Path, lin_bundles: dict[str, Path], keypair: KeyPair, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    lin_home(home, lin_bundles, keypair)
    rows = iris[0][:1].astype(np.float32)
    with running(home, "lin", "--poll-interval", "3600") as server:
        assert main(["-q", "uninstall", "--yes", "lin"]) == 0
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("lin was uninstalled" in line for line in server.stderr))
        for path in (
            "/v2/models/lin/ready",
            "/v2/models/lin/versions/1.0.0/ready",
            "/v2/models/lin",
        ):
            status, body = curl(f"{server.url}{path}")
            assert (status, body) == (404, {"error": "model 'lin' is not served here"}), path
        doc = infer_doc("input", rows)
        status, body = curl("-X", "POST", "--data", doc, f"{server.url}/v2/models/lin/infer")
        assert (status, body) == (404, {"error": "model 'lin' is not served here"})
        # Asked for by name: served again once installed again.
        install("lin@2.0.0", keypair)
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("serving lin@2.0.0" in line for line in server.stderr))
        assert lin_version(server, rows) == "2.0.0"


def test_no_request_fails_while_the_current_version_switches(
    home: Path,
    lin_bundles: dict[str, Path],
    lin_models: dict[str, Any],
    keypair: KeyPair,
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    """5,000+ requests over 32 connections while `current` switches 5 times, by `update`,
    `install` and `rollback`, at least 800 answers apart: none fails, each answer is the
    one of the version it names, and each new version answers within a second of the
    command that made it current."""
    lin_home(home, lin_bundles, keypair)
    promote("lin@1.0.0", keypair)
    install("lin@stable", keypair)  # follows the channel: `update` switches it
    rows = iris[0][::3].astype(np.float32)
    expected = {v: m.predict(rows) for v, m in lin_models.items()}
    bodies = [infer_doc("input", rows[i : i + 1]).encode() for i in range(len(rows))]
    answers: list[tuple[int, str, float, float]] = []
    failures: list[str] = []
    switching = threading.Event()
    switching.set()

    with running(home) as server:
        host, port = server.address.rsplit(":", 1)

        def load(worker: int) -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            i = worker
            while switching.is_set() or len(answers) < 5000:
                row = i % len(bodies)
                i += 32
                try:
                    connection.request("POST", "/v2/models/lin/infer", bodies[row])
                    response = connection.getresponse()
                    data = response.read()
                    if response.status != 200:
                        failures.append(f"{response.status} {data[:200]!r}")
                        continue
                    doc = json.loads(data)
                    value = doc["outputs"][0]["data"][0]
                    answers.append((row, doc["model_version"], value, time.monotonic()))
                except (OSError, http.client.HTTPException) as e:
                    failures.append(repr(e))
                    connection = http.client.HTTPConnection(host, int(port), timeout=60)

        def update() -> None:
            promote("lin@2.0.0", keypair)
            assert main(["-q", "update", "--key", str(keypair.pub_path)]) == 0

        def rollback() -> None:
            assert main(["-q", "rollback", "lin"]) == 0

        switches = [
            (update, "2.0.0"),
            (rollback, "1.0.0"),
            (lambda: install("lin@2.0.0", keypair), "2.0.0"),
            (rollback, "1.0.0"),
            (lambda: install("lin@2.0.0", keypair), "2.0.0"),
        ]
        delays = []
        workers = [threading.Thread(target=load, args=(w,)) for w in range(32)]
        for worker in workers:
            worker.start()
        try:
            seen = 0
            for switch, now in switches:
                wait_for(lambda seen=seen: len(answers) >= seen + 800)
                seen = len(answers)
                switch()
                done = time.monotonic()
                wait_for(lambda now=now, seen=seen: any(a[1] == now for a in answers[seen:]))
                first = next(a[3] for a in answers[seen:] if a[1] == now)
                delays.append(first - done)
        finally:
            switching.clear()
            for worker in workers:
                worker.join(300)
    assert failures == []
    assert len(answers) >= 5000
    assert [v for _, v, _, _ in answers if v != answers[0][1]]  # both versions answered
    for row, version, value, _ in answers:
        assert value == pytest.approx(float(expected[version][row]), abs=1e-3), (row, version)
    assert max(delays) < 1.0, delays


def test_a_version_that_cannot_load_leaves_the_one_before_answering(
    home: Path, lin_bundles: dict[str, Path], keypair: KeyPair, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    lin_home(home, lin_bundles, keypair)
    rows = iris[0][:1].astype(np.float32)
    with running(home, "--poll-interval", "3600") as server:
        install("lin@2.0.0", keypair)
        graph = home / "models" / "lin" / "2.0.0" / "model.onnx"
        graph.chmod(0o644)
        good = graph.read_bytes()
        graph.write_bytes(b"not an onnx graph")
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: any("lin@2.0.0 cannot be served" in line for line in server.stderr))
        assert lin_version(server, rows) == "1.0.0"
        assert server.process.poll() is None
        # Not tried again at each poll; SIGHUP (`systemctl reload`) tries it again.
        graph.write_bytes(good)
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: lin_version(server, rows) == "2.0.0")


def test_a_store_that_cannot_be_read_is_reported_and_the_server_goes_on(
    home: Path, lin_bundles: dict[str, Path], keypair: KeyPair, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """A poll that cannot read the store (here `current` is no link: too many open files
    does the same) is said once; the server answers with what it has, still answers 408
    to bodies not sent in time and SIGHUP, and follows `current` once it can read it."""
    lin_home(home, lin_bundles, keypair)
    rows = iris[0][:1].astype(np.float32)
    body = infer_doc("input", rows).encode()
    current = home / "models" / "lin" / "current"
    with running(home, "--poll-interval", "0.1", "--read-timeout", "1") as server:
        current.unlink()
        current.write_text("1.0.0")
        wait_for(lambda: any("cannot look at the installed" in line for line in server.stderr))
        server.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert server.process.poll() is None
        assert lin_version(server, rows) == "1.0.0"
        assert read_response(raw_request(server, body, send=10))[0] == 408
        current.unlink()
        current.symlink_to("1.0.0")
        install("lin@2.0.0", keypair)
        wait_for(lambda: lin_version(server, rows) == "2.0.0")
        said = [line for line in server.stderr if "cannot look at the installed" in line]
        assert len(said) == 1
        assert any("can be looked at again" in line for line in server.stderr)
    assert not any("Traceback" in line for line in server.stderr)


def status_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_status_shows_what_a_running_server_serves(
    home: Path,
    lin_bundles: dict[str, Path],
    keypair: KeyPair,
    iris: tuple[np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
    from prometheus_client.parser import text_string_to_metric_families as parse_text

    lin_home(home, lin_bundles, keypair)
    rows = iris[0][:1].astype(np.float32)
    with running(home, "--poll-interval", "0.2") as server:
        pid = server.process.pid
        doc = status_json(capsys)
        assert doc["servers"] == [
            {"pid": pid, "address": server.url, "models": [{"name": "lin", "version": "1.0.0"}]}
        ]
        (lin,) = doc["models"]
        assert lin["served"] == [{"address": server.url, "pid": pid, "version": "1.0.0"}]
        assert main(["status"]) == 0
        assert f"served 1.0.0 at {server.url} (pid {pid})" in capsys.readouterr().out

        install("lin@2.0.0", keypair)
        wait_for(lambda: status_json(capsys)["servers"][0]["models"][0]["version"] == "2.0.0")
        assert lin_version(server, rows) == "2.0.0"
        assert main(["status", "--openmetrics"]) == 0
        text = capsys.readouterr().out
        for parse in (parse_om, parse_text):
            found = [
                (s.labels, s.value)
                for family in parse(text)
                for s in family.samples
                if s.name == "packager_served_info"
            ]
            assert found == [({"model": "lin", "version": "2.0.0", "address": server.url}, 1)]
        assert server.stop() == 0
    doc = status_json(capsys)
    assert doc["servers"] == []
    assert doc["models"][0]["served"] == []
    assert list((home / "run").iterdir()) == []


def test_status_ignores_and_removes_the_file_of_a_server_that_is_gone_or_reused(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = home / "run"
    run.mkdir(parents=True)
    stale = run / f"serve-{dead.pid}.json"
    stale.write_text(json.dumps({"pid": dead.pid, "address": "http://127.0.0.1:1", "models": []}))
    # A live process, but not the one that wrote the file: it started at another time.
    reused = run / f"serve-{os.getppid()}.json"
    doc = {"pid": os.getppid(), "started": "1", "address": "http://127.0.0.1:2", "models": []}
    reused.write_text(json.dumps(doc))
    unreadable = run / f"serve-{os.getpid()}.json"
    unreadable.write_bytes(b'{"pid": 1, "pid": 1}')  # not this process's, and a duplicate key
    assert status_json(capsys)["servers"] == []
    assert not stale.exists()
    assert not reused.exists()
    assert unreadable.exists()  # its process is alive: not ours to remove
    assert main(["status", "--openmetrics"]) == 0
    assert "packager_served_info" not in capsys.readouterr().out


def test_status_skips_a_fifo_and_does_not_follow_a_symlink(home: Path, tmp_path: Path) -> None:
    run = home / "run"
    run.mkdir(parents=True)
    # A FIFO in place of a live process's file: opening it to read would wait for a writer.
    os.mkfifo(run / f"serve-{os.getpid()}.json")
    # A link to a valid record of a live process: not a file a server wrote there.
    elsewhere = tmp_path / "record.json"
    record = {"pid": os.getppid(), "address": "http://127.0.0.1:2", "models": []}
    elsewhere.write_text(json.dumps(record))
    (run / f"serve-{os.getppid()}.json").symlink_to(elsewhere)
    result = subprocess.run(
        [sys.executable, "-m", "packager", "status", "--json"],
        capture_output=True,
        text=True,
        env=serve_env(home),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["servers"] == []


def systemd_unit() -> configparser.ConfigParser:
    """examples/packager-serve.service, parsed."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(Path(__file__).resolve().parents[1] / "examples" / "packager-serve.service")
    return unit


def test_the_systemd_unit_runs_a_valid_serve_command() -> None:
    """examples/packager-serve.service: its ExecStart is a `packager serve` command line that
    the command accepts, and it reloads with SIGHUP."""
    import click

    from packager.cli import cli

    unit = systemd_unit()
    argv = shlex.split(unit["Service"]["ExecStart"])
    assert argv[:2] == ["/usr/local/bin/packager", "serve"]
    command = cli.get_command(click.Context(cli), "serve")
    assert command is not None
    context = command.make_context("serve", argv[2:])
    assert context.params["host"] == "127.0.0.1"
    assert unit["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["Service"]["KillSignal"] == "SIGTERM"


def test_the_systemd_units_sandbox_lets_the_server_record_itself_and_only_that(
    home: Path,
    lin_bundles: dict[str, Path],
    keypair: KeyPair,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """examples/packager-serve.service's paths, with /var/lib/packager this test's home:
    ExecStartPre makes run/, then the server runs with the home read-only but for run/
    (what systemd's ReadOnlyPaths and ReadWritePaths make, done here with a mount
    namespace); `packager status` sees it, and the rest of the home is mounted read-only
    for it."""
    usable = os.geteuid() == 0 and shutil.which("unshare") and shutil.which("mount")
    if not usable or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        message = "needs root with unshare and mount (util-linux) for a private mount namespace"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    service = systemd_unit()["Service"]

    def here(value: str) -> list[str]:
        return shlex.split(value.replace("/var/lib/packager", str(home)))

    lin_home(home, lin_bundles, keypair)
    assert service["ExecStartPre"].startswith("+")  # run outside the sandbox, as root
    pre = " ".join(here(service["ExecStartPre"][1:]))
    pre = pre.replace("-o packager -g packager", f"-o {os.getuid()} -g {os.getgid()}")
    subprocess.run(shlex.split(pre), check=True)
    writable, read_only = here(service["ReadWritePaths"]), here(service["ReadOnlyPaths"])
    setup = " && ".join(
        [
            *(f"mount --bind {p} {p}" for p in writable),
            *(f"mount --rbind {p} {p} && mount -o remount,bind,ro {p}" for p in read_only),
            'exec "$@"',
        ]
    )
    sandbox = ["unshare", "-m", "--propagation", "private", "sh", "-c", setup, "sh"]
    with running(home, "lin", prefix=sandbox) as server:
        pid = server.process.pid
        assert status_json(capsys)["servers"] == [
            {"pid": pid, "address": server.url, "models": [{"name": "lin", "version": "1.0.0"}]}
        ]
        mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        options = {line.split()[4]: line.split()[5].split(",")[0] for line in mounts}
        assert options[str(home)] == "ro" and options[str(home / "run")] == "rw"
        assert server.stop() == 0
    assert not any("cannot record" in line for line in server.stderr), server.stderr


def test_a_refused_request_leaves_the_cost_that_chooses_thread_or_event_loop(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """Whether a request runs on the event loop or an inference thread follows what the
    model's last answer cost per row: a request refused before inference says nothing of
    that, nor does an answer of no rows; one refused after the model ran cannot hide what
    the run cost."""
    from packager.errors import UsageError
    from packager.instance.serve import app, batch, protocol
    from packager.instance.serve.served import Served
    from packager.instance.store import Store

    loaded = Served(Store(iris_home), ["iris"], threads=1).current("iris")
    specs = loaded.model.inputs
    (name,) = [spec.name for spec in specs]

    def request(rows: np.ndarray, **more: Any) -> protocol.InferRequest:
        doc = {**json.loads(infer_doc(name, rows)), **more}
        return protocol.parse_request(json.dumps(doc).encode(), specs)

    slow = 10 * app.INLINE_SECONDS
    loaded.cost.seconds = slow
    missing = json.loads(infer_doc(name, iris[0][:2]))
    missing["inputs"][0]["data"][1][2] = None  # null: a missing value, which iris refuses
    refused = protocol.parse_request(json.dumps(missing).encode(), specs)
    with pytest.raises(UsageError, match="missing"):
        app._timed(loaded, 2, batch.alone, loaded, refused)
    assert loaded.cost.seconds == slow
    app._timed(loaded, 0, batch.alone, loaded, request(iris[0][:0]))
    assert loaded.cost.seconds == slow
    answer = json.loads(app._timed(loaded, 2, batch.alone, loaded, request(iris[0][:2])))
    assert answer["model_version"] == "1.1.0"
    assert 0 < loaded.cost.seconds < app.INLINE_SECONDS
    # Refused once the model has run (no such output): what the run cost still counts.
    loaded.cost.seconds = 0.0
    with pytest.raises(UsageError, match="no output 'nope'"):
        app._timed(loaded, 2, batch.alone, loaded, request(iris[0][:2], outputs=[{"name": "nope"}]))
    assert loaded.cost.seconds > 0


class _Transport:
    """What uvicorn's protocol uses of an asyncio transport: it keeps what is written."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 9999)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, data: Any) -> None:
        self.written += b"".join(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, _protocol: Any) -> None:
        pass


def test_the_head_bound_counts_only_heads() -> None:
    """One read with a head and a large body is taken; a head of 64 KiB and more, on the
    first request or a later one of the connection, is answered 431 and closed."""
    import asyncio

    import uvicorn
    from uvicorn.server import ServerState

    from packager.instance.serve.limits import MAX_HEAD_BYTES, BoundedHttpToolsProtocol

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def connection(*reads: bytes) -> _Transport:
        config = uvicorn.Config(app, http=BoundedHttpToolsProtocol, lifespan="off")
        config.load()
        protocol = BoundedHttpToolsProtocol(config, ServerState(), {})
        transport = _Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        for data in reads:
            protocol.data_received(data)
            await asyncio.sleep(0.01)  # the app answers
        return transport

    body = bytes(4 * MAX_HEAD_BYTES)
    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    endless = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 200)
    taken = asyncio.run(connection(post + body, post + body[:10], body[10:]))
    assert taken.written.count(b"HTTP/1.1 200 OK") == 2 and not taken.closed
    for reads in ([endless], [post + body, endless[:100], endless[100:]]):
        refused = asyncio.run(connection(*reads))
        assert refused.closed
        assert refused.written.count(b"HTTP/1.1 431 Request Header Fields Too Large") == 1


# -- one write per response ----------------------------------------------------------------

# struct tcp_info (linux/tcp.h): tcpi_data_segs_in, the segments received that carried data.
_DATA_SEGS_IN = 152


def data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[_DATA_SEGS_IN : _DATA_SEGS_IN + 4], sys.byteorder)


def test_a_response_comes_in_one_segment(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """Head and body of an answer leave in one write: the client gets one TCP segment, and
    is woken once, for each of several requests on one connection."""
    body = infer_doc("input", iris[0][:1].astype(np.float32)).encode()
    with running(iris_home) as server:
        sock = raw_request(server, body, send=len(body))
        for n in range(1, 4):
            status, _headers, answer = read_response(sock)
            assert status == 200 and answer["model_name"] == "iris"
            assert data_segments_in(sock) == n
            if n < 3:
                sock.sendall(b"POST" + raw_head(len(body)).partition(b"POST")[2] + body)
        sock.close()


def raw_head(length: int, extra: str = "") -> bytes:
    return (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {length}\r\n\r\n"
    ).encode()


def test_head_requests_and_100_continue_are_answered(
    iris_home: Path, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    """What the single write must not hold back: a HEAD answer (no body follows its head)
    and the ``100 Continue`` a client waits for before it sends its body."""
    body = infer_doc("input", iris[0][:1].astype(np.float32)).encode()
    with running(iris_home) as server:
        sock = connect(server)
        sock.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = sock.makefile("rb")
        response = http.client.HTTPResponse(sock, method="HEAD")
        response.fp = reader
        response.begin()
        assert response.status in (200, 405) and response.read() == b""
        reader = sock.makefile("rb")  # the HEAD answer's reader closed with it
        sock.sendall(raw_head(len(body), "Expect: 100-continue\r\n"))
        assert reader.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert reader.readline() == b"\r\n"
        sock.sendall(body)
        response = http.client.HTTPResponse(sock)
        response.fp = reader
        response.begin()
        assert response.status == 200 and json.loads(response.read())["model_name"] == "iris"
        sock.close()


@contextlib.contextmanager
def uvicorn_on_a_thread(read_seconds: float) -> Iterator[tuple[Any, int, threading.Thread]]:
    """The uvicorn server `packager serve` runs, with its protocol and a read timeout of
    ``read_seconds``, answering each request 200 once its body is read (``/slow`` after
    twice the read timeout); on 127.0.0.1, on a thread of this process, whose tables can
    then be looked at."""
    import asyncio

    import uvicorn

    from packager.instance.serve.limits import with_read_timeout

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/slow":
            await asyncio.sleep(2 * read_seconds)
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"2")],
        }
        await send(start)
        await send({"type": "http.response.body", "body": b"{}"})

    listening = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=with_read_timeout(read_seconds), lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]})
    thread.start()
    try:
        wait_for(lambda: server.started, 10)
        yield server, listening.getsockname()[1], thread
    finally:
        server.should_exit = True
        thread.join(30)
        listening.close()


def until_closed(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return data


def test_the_heads_awaited_are_forgotten_when_connections_close() -> None:
    """No connection stays in the table of heads awaited once it is closed, by the client,
    by its deadline, or by a graceful shutdown; the sweep stops when nothing waits."""
    from packager.instance.serve.limits import _HEADS

    post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
    with uvicorn_on_a_thread(30) as (server, port, _thread):
        fresh, partial, kept, reading = (
            socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(4)
        )
        partial.sendall(b"GET / HTTP/1.1\r\nX-A: ")
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(1000).startswith(b"HTTP/1.1 200 OK")
        reading.sendall(post + b"12")  # its head is in: it waits for its body, not a head
        wait_for(lambda: len(server.server_state.connections) == 4, 10)
        heads = _HEADS[server.server_state]  # made with the server's first connection
        wait_for(lambda: len(heads.waiting) == 3, 10)
        for sock in (fresh, partial, kept, reading):
            sock.close()
        # Long before any deadline: connection_lost took them out.
        wait_for(lambda: not server.server_state.connections and not heads.waiting, 10)
    with uvicorn_on_a_thread(0.5) as (server, port, thread):
        late = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        wait_for(lambda: len(server.server_state.connections) == 3, 10)
        heads = _HEADS[server.server_state]
        late[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        late[1].sendall(b"GET / HTTP/1.1\r\nX-A: ")
        sent = [until_closed(sock) for sock in late]
        # Answered, then idle (closed with nothing sent); a head begun; no head (408).
        assert sent[0].startswith(b"HTTP/1.1 200 OK") and sent[0].count(b"HTTP/1.1") == 1
        assert all(s.startswith(b"HTTP/1.1 408 Request Timeout") for s in sent[1:])
        wait_for(lambda: not heads.waiting and heads.timer is None, 10)
        # A graceful shutdown closes a connection awaiting a head, and stops.
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        wait_for(lambda: len(heads.waiting) == 1, 10)
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()
        assert idle.recv(1) == b""
        assert not heads.waiting
        for sock in (*late, idle):
            sock.close()


def test_a_response_slower_than_the_read_timeout_is_not_cut() -> None:
    """The deadline is the head's: a request whose head is in is answered however long it
    takes, and so is one that came in the same read (pipelined) behind it."""
    slow = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    with uvicorn_on_a_thread(0.5) as (_server, port, _thread):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(slow + slow)
        # Both answered, then nothing more: the connection, idle, is closed.
        answers = until_closed(sock)
        assert answers.count(b"HTTP/1.1 200 OK") == 2 and answers.endswith(b"{}")
        sock.close()
