"""Statements signed by shards: what is accepted and refused, read with a statement writer
independent of the code under test (see test_signature)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from packager.core.digests import Digest
from packager.core.shards import (
    DEFAULT_SHARD_SIZE,
    GiB,
    MiB,
    Shard,
    bounds,
    choose_shard_size,
    claimed_shard_size,
    parse_size,
    split_shard_name,
)
from packager.core.signature import sign, statement_payload, verify
from packager.errors import TamperedError, UsageError

from .test_signature import FIXED_KEY, resigned, statement

SIZE = 4096


def sharded(resources: list[tuple[str, str]], *, shard_size: object = SIZE) -> dict[str, Any]:
    """A statement by shards over ``(path:start:end, hex)`` pairs, in the given order."""
    document = statement(resources)
    document["predicate"]["serialization"] = {
        "method": "shards",
        "hash_type": "sha256",
        "shard_size": shard_size,
        "allow_symlinks": False,
        "ignore_paths": ["model.sig"],
    }
    for resource in document["predicate"]["resources"]:
        resource["algorithm"] = f"sha256-sharded-{SIZE}"  # as model-signing names it
    return document


def hexof(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


WEIGHTS = bytes(range(256)) * 40  # 10240 bytes: shards 0-4096, 4096-8192, 8192-10240
GOOD = [
    ("manifest.json:0:2", hexof(b"{}")),
    ("weights.bin:0:4096", hexof(WEIGHTS[:4096])),
    ("weights.bin:4096:8192", hexof(WEIGHTS[4096:8192])),
    ("weights.bin:8192:10240", hexof(WEIGHTS[8192:])),
]


def test_a_statement_by_shards_gives_each_files_shards_in_order() -> None:
    # Listed out of order, as any signer may: the shards come back in file order.
    signed = verify(
        resigned(sharded([GOOD[3], GOOD[0], GOOD[2], GOOD[1]])),
        public_keys=[FIXED_KEY.public_key()],
    )
    assert signed.shard_size == SIZE
    assert [(s.start, s.end) for s in signed.shards["weights.bin"]] == [
        (0, 4096),
        (4096, 8192),
        (8192, 10240),
    ]
    assert signed.shards["weights.bin"][1].digest == Digest(hexof(WEIGHTS[4096:8192]))
    # One shard is the whole file: its digest is the file's; several are not.
    assert dict(signed.resources) == {"manifest.json": Digest.of(b"{}")}


def test_shard_size_written_as_a_float_by_model_signing_is_read() -> None:
    document = sharded(GOOD, shard_size=4096.0)
    signed = verify(resigned(document), public_keys=[FIXED_KEY.public_key()])
    assert signed.shard_size == 4096
    assert claimed_shard_size(resigned(document)) == 4096


@pytest.mark.parametrize(
    ("resources", "shard_size", "reason"),
    [
        (GOOD[:1] + GOOD[2:], SIZE, "not contiguous"),  # a shard left out
        (GOOD[:3], SIZE, None),  # the last shard left out: the file is shorter (checked later)
        ([*GOOD, ("weights.bin:8192:10241", GOOD[3][1])], SIZE, "not contiguous"),
        ([GOOD[0], ("weights.bin:0:5000", GOOD[1][1])], SIZE, "not contiguous"),
        ([GOOD[0], ("weights.bin:1:4096", GOOD[1][1])], SIZE, "not contiguous"),
        ([GOOD[0], ("weights.bin:0:0", GOOD[1][1])], SIZE, "not contiguous"),
        ([("manifest.json", GOOD[0][1])], SIZE, "path:start:end"),
        ([("manifest.json:0:-2", GOOD[0][1])], SIZE, "path:start:end"),
        ([("../x:0:2", GOOD[0][1])], SIZE, "'..'"),
        (GOOD, 4096.5, "not an integer"),
        (GOOD, "4096", "not an integer"),
        (GOOD, True, "not an integer"),
        (GOOD, 512, "below"),
    ],
)
def test_malformed_shards_are_refused(
    resources: list[tuple[str, str]], shard_size: object, reason: str | None
) -> None:
    sig = resigned(sharded(resources, shard_size=shard_size))
    if reason is None:
        verify(sig, public_keys=[FIXED_KEY.public_key()])
        return
    with pytest.raises(TamperedError, match=reason):
        verify(sig, public_keys=[FIXED_KEY.public_key()])


def test_another_algorithm_name_is_refused() -> None:
    document = sharded(GOOD)
    document["predicate"]["resources"][1]["algorithm"] = "sha256-sharded-8192"
    with pytest.raises(TamperedError, match="algorithm"):
        verify(resigned(document), public_keys=[FIXED_KEY.public_key()])


def test_we_sign_what_we_read() -> None:
    cut = {
        "weights.bin": tuple(
            Shard(start, end, Digest(hexof(WEIGHTS[start:end])))
            for start, end in bounds(len(WEIGHTS), SIZE)
        ),
        "manifest.json": (Shard(0, 2, Digest.of(b"{}")),),
    }
    resources = {"weights.bin": Digest.of(WEIGHTS), "manifest.json": Digest.of(b"{}")}
    sig = sign(
        subject_name="m", resources=resources, private_key=FIXED_KEY, shard_size=SIZE, shards=cut
    )
    signed = verify(sig, public_keys=[FIXED_KEY.public_key()])
    assert dict(signed.shards) == cut
    # Listed as model-signing lists them, by path then offset, with its algorithm name.
    payload = statement_payload("m", resources, shard_size=SIZE, shards=cut).decode()
    assert payload.index('"manifest.json:0:2"') < payload.index('"weights.bin:0:4096"')
    assert payload.index('"weights.bin:4096:8192"') < payload.index('"weights.bin:8192:10240"')
    assert '"algorithm":"sha256-sharded-4096"' in payload
    assert '"shard_size":4096' in payload


def test_signing_refuses_missing_or_misaligned_shards() -> None:
    resources = {"weights.bin": Digest.of(WEIGHTS)}
    with pytest.raises(UsageError, match="shards were not given"):
        statement_payload("m", resources, shard_size=SIZE, shards={})
    with pytest.raises(UsageError, match="4096-byte shard"):
        statement_payload(
            "m",
            resources,
            shard_size=SIZE,
            shards={"weights.bin": (Shard(0, 5000, Digest.of(b"")),)},
        )


def test_default_shards_only_files_over_the_threshold() -> None:
    assert choose_shard_size([10, GiB]) is None
    assert choose_shard_size([10, GiB + 1]) == DEFAULT_SHARD_SIZE == 256 * MiB
    assert choose_shard_size([10], requested=64 * MiB) == 64 * MiB
    assert choose_shard_size([GiB + 1], requested=0) is None
    with pytest.raises(UsageError):
        choose_shard_size([10], requested=100)


def test_sizes_and_names() -> None:
    assert parse_size("256MiB") == 256 * MiB
    assert parse_size("4096") == 4096
    assert parse_size("1 GiB") == GiB
    for bad in ("", "MiB", "-1", "1.5GiB", "12 parsecs"):
        with pytest.raises(UsageError):
            parse_size(bad)
    assert bounds(0, SIZE) == []
    assert bounds(SIZE, SIZE) == [(0, SIZE)]
    assert split_shard_name("a:b/c.bin:0:10") == ("a:b/c.bin", 0, 10)
    assert split_shard_name("c.bin:0:+10") is None


def test_claimed_shard_size_of_anything_else_is_none() -> None:
    assert claimed_shard_size(resigned(statement(GOOD[:1]))) is None
    assert claimed_shard_size(b"not json") is None
    assert claimed_shard_size(b'{"dsseEnvelope": {"payload": "!!"}}') is None
    assert claimed_shard_size(resigned(sharded(GOOD, shard_size=1))) is None
