"""Every JSON document read from outside goes through the one strict loader: a repeated
key, a non-standard number or an oversized document is refused wherever it comes from."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

from packager._io.keys import encode_cosign_private_key, generate_private_key, load_private_key
from packager._io.table import read_table
from packager.core.channel import parse_channel_payload
from packager.core.manifest import MANIFEST, parse_manifest
from packager.errors import SmokeTestError, TamperedError, UsageError
from packager.instance.smoke import run_smoke_test

EXAMPLE = Path(__file__).parent.parent / "manifests" / "manifest.example.json"


def repeat_first_key(doc: bytes) -> bytes:
    """``doc`` (a JSON object) with its first member written twice, the copy first."""
    first = json.dumps(dict([next(iter(json.loads(doc).items()))]))[1:-1]
    return b"{" + first.encode() + b"," + doc.lstrip()[1:]


def test_manifest_with_a_repeated_key_is_refused() -> None:
    data = EXAMPLE.read_bytes()
    parse_manifest(data)
    with pytest.raises(TamperedError, match="manifest.json is not acceptable JSON: duplicate key"):
        parse_manifest(repeat_first_key(data))
    with pytest.raises(TamperedError, match="non-standard number NaN"):
        parse_manifest(data.replace(b'"atol": 0.0001', b'"atol": NaN'))
    with pytest.raises(TamperedError, match="not a JSON object"):
        parse_manifest(b"[]")


def test_channel_document_with_a_repeated_key_is_refused() -> None:
    payload = (
        b'{"_type": "x", "_type": "https://packager.dev/channel/v1", "name": "iris", '
        b'"channel": "stable", "version": "1.0.0", "manifestDigest": "sha256:00", '
        b'"issued": "2026-11-01T00:00:00Z", "expires": "2026-12-01T00:00:00Z", "sequence": 1}'
    )
    with pytest.raises(TamperedError, match="channel document is not acceptable JSON"):
        parse_channel_payload(payload)


def test_json_table_with_a_repeated_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sample.json"
    path.write_text('[{"a": 1, "b": 2, "a": 3}]')
    with pytest.raises(UsageError, match="sample.json is not acceptable JSON: duplicate key 'a'"):
        read_table(path)


def test_cosign_key_with_a_repeated_field_is_refused(tmp_path: Path) -> None:
    pem = encode_cosign_private_key(generate_private_key(), b"pw")
    lines = pem.decode().strip().splitlines()
    body = base64.b64decode("".join(lines[1:-1]))
    doubled = base64.b64encode(repeat_first_key(body)).decode()
    path = tmp_path / "cosign.key"
    path.write_text(f"{lines[0]}\n{doubled}\n{lines[-1]}\n")
    with pytest.raises(UsageError, match=r"cosign key\) is not acceptable JSON: duplicate key"):
        load_private_key(path, password=lambda: b"pw")


def fake_child(tmp_path: Path, result: str) -> str:
    """An interpreter that answers ``result`` on the result descriptor (its last argument)."""
    interpreter = tmp_path / "python"
    interpreter.write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        'for fd in "$@"; do :; done\n'
        f"printf '%s' '{result}' >/dev/fd/$fd\n"
    )
    interpreter.chmod(0o755)
    return str(interpreter)


COMPARISON = (
    '"rows": 30, "max_rel_diff": 0.5, "label_agreement": null, "worst": ["output y: got nan"]'
)


def test_smoke_result_from_the_child_is_parsed_strictly(
    bundles: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = bundles["1.0.0"]
    manifest = parse_manifest((bundle / MANIFEST).read_bytes())
    # An infinite difference (NaN on one side) arrives as a string and is read back.
    good = '{"comparison": {"ok": false, "max_abs_diff": "inf", ' + COMPARISON + '}, "peakRss": 1}'
    monkeypatch.setattr(sys, "executable", fake_child(tmp_path, good))
    smoke = run_smoke_test(bundle, manifest)
    assert smoke.comparison.max_abs_diff == float("inf")
    assert smoke.comparison.worst == ("output y: got nan",)
    for bad in (
        '{"comparison": {"ok": true, "max_abs_diff": NaN, ' + COMPARISON + '}, "peakRss": 1}',
        '{"peakRss": 1, "peakRss": 2, "error": "SmokeTestError", "message": "x"}',
        "[1]",
    ):
        monkeypatch.setattr(sys, "executable", fake_child(tmp_path, bad))
        with pytest.raises(SmokeTestError, match="the smoke test result is not"):
            run_smoke_test(bundle, manifest)
