"""Hostile servers against fetching by shards: each Range answered wrongly, for both
remote kinds of registry (see tests/test_hostile_servers.py for the servers). Every fault
ends in a one-line refusal with nothing installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packager.core.policy import Unverified
from packager.distribution.publish import publish_bundle
from packager.errors import RegistryError, TamperedError
from packager.registry.layout import LayoutRegistry

from .conftest import KeyPair
from .registry.servers import serve
from .test_hostile_servers import (
    HUGE,
    KINDS,
    Hostile,
    _HostileHandler,
    blob_target,
    open_kind,
    refused,
)
from .test_shards import README, SHARD, package_sharded


class _RangedHandler(_HostileHandler):
    """The hostile server, answering closed ranges (``bytes=A-B``) honestly too, with
    faults for them: ``range-endless`` (206, then garbage without end), ``range-offset``
    (206 for the range one shard later), ``range-other`` (206 with the right header and
    the bytes of the next shard)."""

    def honest(self, body: bytes, media_type: str) -> None:
        first, last = self.closed_range(len(body))
        if first is None:
            super().honest(body, media_type)
            return
        part = f"bytes {first}-{last}/{len(body)}"
        self.answer(206, body[first : last + 1], {"Content-Range": part})

    def closed_range(self, size: int) -> tuple[int | None, int]:
        spec = self.headers.get("Range", "").removeprefix("bytes=")
        first, _, last = spec.partition("-")
        if not (first.isdigit() and last.isdigit()):
            return None, 0
        return int(first), min(int(last), size - 1)

    def fault_range_endless(self, owner: Hostile, body: bytes, hit: int) -> None:
        first, last = self.closed_range(len(body))
        self.head(206, Content_Range=f"bytes {first}-{last}/{len(body)}", Connection="close")
        self.endless(owner, body[first or 0 :], lambda data: data)

    def fault_range_offset(self, owner: Hostile, body: bytes, hit: int) -> None:
        first, _ = self.closed_range(len(body))
        start = (first or 0) + SHARD
        part = f"bytes {start}-{min(start + SHARD, len(body)) - 1}/{len(body)}"
        self.answer(206, body[start : start + SHARD], {"Content-Range": part})

    def fault_range_other(self, owner: Hostile, body: bytes, hit: int) -> None:
        first, last = self.closed_range(len(body))
        start = (first or 0) + SHARD
        part = f"bytes {first}-{last}/{len(body)}"
        self.answer(206, body[start : start + SHARD], {"Content-Range": part})


@pytest.fixture(scope="module")
def sharded_root(
    tmp_path_factory: pytest.TempPathFactory,
    iris_model: object,
    iris: tuple[np.ndarray, np.ndarray],
    keypair: KeyPair,
) -> tuple[Path, str]:
    """A registry directory holding iris 3.0.0 signed by shards; and its README's hex."""
    out = tmp_path_factory.mktemp("hostile-shards")
    bundle = package_sharded(out, iris_model, iris, keypair, "3.0.0")
    root = out / "registry"
    artifact = publish_bundle(
        bundle, registry=LayoutRegistry(root), mode=Unverified("publish without --key")
    )
    (root / "models.json").write_text('["iris"]\n')
    assert artifact.files["README.md"].size == len(README)
    return root, artifact.files["README.md"].digest.hex


@pytest.mark.parametrize(
    ("fault", "error", "says"),
    [
        ("range-endless", TamperedError, "more bytes than asked"),
        ("range-offset", RegistryError, "wrong offset"),
        ("range-other", TamperedError, "signed digest"),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_answer_to_a_range_is_refused(
    kind: str,
    fault: str,
    error: type[Exception],
    says: str,
    sharded_root: tuple[Path, str],
    home: Path,
    keypair: KeyPair,
) -> None:
    root, readme = sharded_root
    server = Hostile(root, blob_target(kind, readme), fault, times=100)
    with serve(_RangedHandler, server) as port:
        server.port = port
        try:
            caught = refused(open_kind(kind, server), home, keypair, "iris@3.0.0")
        finally:
            server.closing.set()
    assert isinstance(caught, error), caught
    assert says in str(caught) and "\n" not in str(caught)
    assert server.sent < HUGE // 2 or fault != "range-endless"
    assert any(r and r.startswith("bytes=") and r.endswith(str(SHARD - 1)) for r in server.hits())
