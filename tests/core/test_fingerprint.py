"""The two rules that let an upgrade reuse a held file without hashing it."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from packager.core.fingerprint import Fingerprint
from packager.core.verify import (
    fingerprints_hold_on,
    still_the_same_inode,
    unchanged_since_verified,
)

RECORDED = Fingerprint(dev=64769, ino=2**63 + 5, size=4096, mtime_ns=10**18, ctime_ns=10**18 + 7)


def test_only_the_recorded_fingerprint_of_the_signed_size_is_trusted() -> None:
    assert unchanged_since_verified(RECORDED, RECORDED, signed_size=4096)
    assert not unchanged_since_verified(None, RECORDED, signed_size=4096)
    assert not unchanged_since_verified(RECORDED, RECORDED, signed_size=4095)


@pytest.mark.parametrize("field", ["dev", "ino", "size", "mtime_ns", "ctime_ns"])
def test_any_field_that_moved_means_hashing(field: str) -> None:
    moved = replace(RECORDED, **{field: getattr(RECORDED, field) + 1})
    assert not unchanged_since_verified(RECORDED, moved, signed_size=moved.size)


def test_a_link_may_move_ctime_only() -> None:
    linked = replace(RECORDED, ctime_ns=RECORDED.ctime_ns + 1)
    assert still_the_same_inode(RECORDED, linked)
    for field in ("dev", "ino", "size", "mtime_ns"):
        assert not still_the_same_inode(RECORDED, replace(linked, **{field: 1}))


def test_the_kernel_moves_ctime_on_every_change(tmp_path: Path) -> None:
    """What the rules rely on: a link, chmod, utime or write of a file moves its ctime
    (once the kernel's clock has ticked: timestamps have its granularity, see ADR 0011)."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    seen = Fingerprint.of(os.lstat(path))
    steps = (
        lambda: os.link(path, tmp_path / "g"),
        lambda: os.utime(path, ns=(seen.mtime_ns, seen.mtime_ns)),
        lambda: path.write_bytes(b"x"),
        lambda: path.chmod(0o400),
    )
    for step in steps:
        before = Fingerprint.of(os.lstat(path))
        time.sleep(0.05)
        step()
        assert Fingerprint.of(os.lstat(path)).ctime_ns > before.ctime_ns


@pytest.mark.parametrize("filesystem", ["ext4", "xfs", "btrfs", "tmpfs", "zfs"])
def test_fingerprints_hold_on_local_filesystems(filesystem: str) -> None:
    assert fingerprints_hold_on(filesystem)


@pytest.mark.parametrize("filesystem", ["nfs", "nfs4", "9p", "fuse.sshfs", "cifs", "overlay", None])
def test_fingerprints_do_not_hold_on_network_fuse_or_unknown_filesystems(
    filesystem: str | None,
) -> None:
    assert not fingerprints_hold_on(filesystem)
