"""HTTPS registries certified by an internal CA that is installed on the host: trusted
through the operating system's store (OpenSSL's default locations, which SSL_CERT_FILE
and SSL_CERT_DIR point elsewhere for the child process), with no --ca-cert."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import make_ca_tls, serve
from .test_http_mirror import Site, _StaticHandler, site  # noqa: F401 - a fixture


def run_search(
    url: str, trust_store: Path, tmp_path: Path, *extra: str, cert_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``packager search`` in a child whose OS trust store is the file ``trust_store``
    alone, or the hashed directory ``cert_dir`` alone (``trust_store`` then missing)."""
    empty_dir = tmp_path / "empty-cert-dir"
    empty_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env |= {"SSL_CERT_FILE": str(trust_store), "SSL_CERT_DIR": str(cert_dir or empty_dir)}
    return subprocess.run(
        [sys.executable, "-m", "packager", "search", "--registry", url, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_a_ca_in_the_system_trust_store_needs_no_flag(
    tmp_path: Path,
    site: Site,  # noqa: F811 - the fixture
) -> None:
    ca, tls = make_ca_tls(tmp_path / "corp")
    other_ca, _ = make_ca_tls(tmp_path / "other", common="Some Other CA")
    site.scheme = "https"
    with serve(_StaticHandler, site, tls) as port:
        site.port = port

        trusted = run_search(site.url, ca, tmp_path)
        assert trusted.returncode == 0, trusted.stderr
        assert trusted.stdout == "iris  1.0.0, 1.1.0, 2.0.0\n"

        refused = run_search(site.url, other_ca, tmp_path)
        assert refused.returncode == 4
        assert "TLS certificate not trusted" in refused.stderr
        assert "system trust store" in refused.stderr and "--ca-cert" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1

        # --ca-cert still adds a CA the host does not trust.
        flagged = run_search(site.url, other_ca, tmp_path, "--ca-cert", str(ca))
        assert flagged.returncode == 0, flagged.stderr


def test_a_ca_in_a_hashed_certificate_directory_is_trusted(
    tmp_path: Path,
    site: Site,  # noqa: F811 - the fixture
) -> None:
    """The layout update-ca-certificates and c_rehash write: <subject hash>.0 links."""
    openssl = shutil.which("openssl")
    if openssl is None:
        message = "openssl is not installed: apt-get install openssl"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    ca, tls = make_ca_tls(tmp_path / "corp")
    subject_hash = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(ca)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / f"{subject_hash}.0").symlink_to(ca)
    missing_file = tmp_path / "no-bundle.pem"
    site.scheme = "https"
    with serve(_StaticHandler, site, tls) as port:
        site.port = port
        trusted = run_search(site.url, missing_file, tmp_path, cert_dir=certs)
        assert trusted.returncode == 0, trusted.stderr
        (certs / f"{subject_hash}.0").unlink()
        (certs / "00000000.0").symlink_to(make_ca_tls(tmp_path / "x", common="Unrelated")[0])
        refused = run_search(site.url, missing_file, tmp_path, cert_dir=certs)
        assert refused.returncode == 4, refused.stderr
