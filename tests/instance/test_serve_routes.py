"""Which paths are inference requests: the same on every look-up, with a bounded memory of
the paths clients chose."""

from __future__ import annotations

import pytest

from packager.instance.serve import app


@pytest.fixture(autouse=True)
def _own_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no path remembered, and leaves the server's memory as it was."""
    monkeypatch.setattr(app, "_ROUTES", {})


def test_inference_paths_are_read_alike_the_first_time_and_after() -> None:
    paths = {
        "/v2/models/iris/infer": ("iris", None),
        "/v2/models/iris/versions/1.0.0/infer": ("iris", "1.0.0"),
        "/v2/models/iris": None,
        "/v2/models//infer": None,
        "/v2/models/a/b/infer": None,
        "/v2/health/ready": None,
    }
    for _ in range(2):
        assert {path: app._route(path) for path in paths} == paths
    assert set(app._ROUTES) == set(paths)


def test_the_paths_remembered_are_bounded_in_number_and_length() -> None:
    long = "/v2/models/" + "x" * 10_000 + "/infer"
    assert app._route(long) == ("x" * 10_000, None)
    assert long not in app._ROUTES
    for i in range(3 * app._MAX_ROUTES):
        assert app._route(f"/v2/models/m{i}/infer") == (f"m{i}", None)
        assert len(app._ROUTES) <= app._MAX_ROUTES
