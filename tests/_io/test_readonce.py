"""One read of a file gives its whole sha256 and each shard's, as hashing the bytes of
each on its own does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from packager._io.readonce import CHUNK, read_all_once, read_bytes_once, read_once
from packager.core.shards import bounds

SHARD = 4096


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, SHARD - 1, SHARD, 3 * SHARD, 3 * SHARD + 7, CHUNK + 5])
@pytest.mark.parametrize("shard_size", [None, SHARD, CHUNK // 2 + 3])
def test_whole_and_shard_digests_of_one_read(
    tmp_path: Path, size: int, shard_size: int | None
) -> None:
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    path = tmp_path / "f"
    path.write_bytes(data)
    for found in (read_once(path, shard_size), read_bytes_once(data, shard_size)):
        assert (found.size, str(found.whole)) == (size, sha(data))
        if shard_size is None:
            assert found.shards == ()
            continue
        cut = bounds(size, shard_size)
        assert [(s.start, s.end) for s in found.shards] == cut
        assert [str(s.digest) for s in found.shards] == [sha(data[a:b]) for a, b in cut]


def test_every_file_is_read(tmp_path: Path) -> None:
    paths = {}
    for name in ("a", "b", "c"):
        paths[name] = tmp_path / name
        paths[name].write_bytes(name.encode() * 5000)
    found = read_all_once(paths, SHARD)
    assert {name: str(r.whole) for name, r in found.items()} == {
        name: sha(name.encode() * 5000) for name in paths
    }
    paths["gone"] = tmp_path / "gone"
    with pytest.raises(FileNotFoundError):
        read_all_once(paths, None)
