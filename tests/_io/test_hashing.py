"""FileHasher's threads get the GIL back promptly while the caller runs Python."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from packager._io.hashing import SWITCH_INTERVAL, FileHasher


def test_the_switch_interval_is_short_while_files_hash_and_restored_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100_000)
    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL
    with FileHasher([path]) as outer:
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        with FileHasher([path]) as inner:
            assert inner.result(path)[0].hex == hashlib.sha256(path.read_bytes()).hexdigest()
        # The outer hasher still runs: the interval stays short until it closes too.
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        outer.results()
    assert sys.getswitchinterval() == before
    outer.close()  # closing again changes nothing
    assert sys.getswitchinterval() == before
