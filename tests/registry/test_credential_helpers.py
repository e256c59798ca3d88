"""Docker credential helpers (credHelpers, credsStore): real executables on PATH, run the
way Docker runs them, against docker-registry with htpasswd auth."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from pathlib import Path

import pytest

from packager.cli import main
from packager.errors import RegistryError
from packager.registry.auth import docker_credentials

from .conftest import USERS, Authenticated

PASSWORD = USERS["alice"]


@pytest.fixture
def helper_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory at the front of PATH for docker-credential-* scripts."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory


def write_helper(directory: Path, name: str, body: str) -> Path:
    path = directory / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def recording_helper(directory: Path, name: str, username: str, secret: str) -> Path:
    """A helper that records its arguments, stdin and environment, then answers."""
    log = directory / f"{name}.log"
    answer = json.dumps({"ServerURL": "ignored", "Username": username, "Secret": secret})
    write_helper(
        directory,
        name,
        f'printf "%s\\n" "$@" > "{log}.args"\n'
        f'cat > "{log}.stdin"\n'
        f'env > "{log}.env"\n'
        f"printf '%s' '{answer}'\n",
    )
    return log


def publish(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    registry: Authenticated,
    namespace: str,
    bundle: Path,
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    ref = f"oci://{registry.host}/{namespace}"
    code = main(["publish", str(bundle), "--registry", ref, "--plain-http", "--json"])
    out, err = capsys.readouterr()
    return code, out, err


def test_cred_helpers_answer_for_their_host(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    docker_config_dir: Path,
    helper_bin: Path,
    basic_registry: Authenticated,
    namespace: str,
    bundles: dict[str, Path],
) -> None:
    log = recording_helper(helper_bin, "corp", "alice", PASSWORD)
    config = {
        "auths": {basic_registry.host: {}},  # what docker login leaves beside a helper
        "credHelpers": {"other.example": "missing-helper", basic_registry.host: "corp"},
    }
    (docker_config_dir / "config.json").write_text(json.dumps(config))

    code, out, err = publish(capsys, monkeypatch, basic_registry, namespace, bundles["1.0.0"])
    assert code == 0, err
    assert json.loads(out)["digest"].startswith("sha256:")
    assert Path(f"{log}.args").read_text() == "get\n"
    assert Path(f"{log}.stdin").read_text() == basic_registry.host
    assert "PACKAGER_KEY_PASSWORD" not in Path(f"{log}.env").read_text()


def test_creds_store_serves_every_host_and_a_refused_secret_stays_secret(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    docker_config_dir: Path,
    helper_bin: Path,
    basic_registry: Authenticated,
    namespace: str,
    bundles: dict[str, Path],
) -> None:
    (docker_config_dir / "config.json").write_text(json.dumps({"credsStore": "store"}))
    recording_helper(helper_bin, "store", "alice", PASSWORD)
    code, _, err = publish(capsys, monkeypatch, basic_registry, namespace, bundles["1.0.0"])
    assert code == 0, err

    recording_helper(helper_bin, "store", "alice", "wrong-helper-secret")
    code, out, err = publish(capsys, monkeypatch, basic_registry, namespace, bundles["1.1.0"])
    assert code == 4
    assert "wrong-helper-secret" not in out + err
    assert "check the credentials from docker-credential-store" in err


def test_a_helper_without_credentials_for_the_host_means_anonymous(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    docker_config_dir: Path,
    helper_bin: Path,
    basic_registry: Authenticated,
    tmp_path: Path,
) -> None:
    config = docker_config_dir / "config.json"
    config.write_text(json.dumps({"credsStore": "empty"}))
    write_helper(helper_bin, "empty", "echo 'credentials not found in native keychain'\nexit 1\n")
    assert docker_credentials(basic_registry.host, config) is None


@pytest.mark.parametrize("host", ["registry-1.docker.io", "docker.io", "index.docker.io"])
def test_docker_hub_is_found_under_the_key_docker_login_uses(
    tmp_path: Path, helper_bin: Path, host: str
) -> None:
    """`docker login` keys Docker Hub as https://index.docker.io/v1/ (in auths and
    credHelpers, and in what it hands a helper), whatever name the registry is reached by."""
    hub = "https://index.docker.io/v1/"
    config = tmp_path / "config.json"
    log = recording_helper(helper_bin, "hub", "alice", "hub-secret")
    config.write_text(json.dumps({"auths": {hub: {}}, "credHelpers": {hub: "hub"}}))
    found = docker_credentials(host, config)
    assert found is not None and (found.username, found.password) == ("alice", "hub-secret")
    assert Path(f"{log}.stdin").read_text() == hub

    store = recording_helper(helper_bin, "store", "bob", "store-secret")
    config.write_text(json.dumps({"credsStore": "store"}))
    assert docker_credentials(host, config) is not None
    assert Path(f"{store}.stdin").read_text() == hub
    assert docker_credentials("registry.example:5000", config) is not None
    assert Path(f"{store}.stdin").read_text() == "registry.example:5000"

    token = base64.b64encode(b"carol:file-secret").decode()
    config.write_text(json.dumps({"auths": {hub: {"auth": token}}}))
    found = docker_credentials(host, config)
    assert found is not None and (found.username, found.password) == ("carol", "file-secret")
    assert docker_credentials("registry.example", config) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "docker-credential-broken, which is not on PATH"),
        ("echo 'keychain locked' >&2\nexit 3\n", "docker-credential-broken get failed"),
        ('printf \'{"Username": "alice", "Secret": "s3cr3t-in-bad-json"\'\n', "answered no"),
        ("printf '[\"s3cr3t-in-bad-json\"]'\n", "answered no credentials"),
        ('printf \'{"Username": "<token>", "Secret": "s3cr3t-in-bad-json"}\'\n', "identity"),
        ("head -c 200000 /dev/zero\n", "more than 65536 bytes"),
    ],
)
def test_a_failing_helper_is_one_line_and_exit_4(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    docker_config_dir: Path,
    helper_bin: Path,
    basic_registry: Authenticated,
    namespace: str,
    bundles: dict[str, Path],
    body: str | None,
    message: str,
) -> None:
    (docker_config_dir / "config.json").write_text(
        json.dumps({"credHelpers": {basic_registry.host: "broken"}})
    )
    if body is not None:
        write_helper(helper_bin, "broken", body)
    code, out, err = publish(capsys, monkeypatch, basic_registry, namespace, bundles["1.0.0"])
    assert code == 4, err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "s3cr3t-in-bad-json" not in out + err


def test_a_helper_that_hangs_is_killed_with_what_it_started(
    docker_config_dir: Path, helper_bin: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleeper.pid"
    write_helper(helper_bin, "slow", f'sleep 300 &\necho $! > "{pid_file}"\nwait\n')
    config = docker_config_dir / "config.json"
    config.write_text(json.dumps({"credsStore": "slow"}))
    # Long enough for the shell to start its child on a busy machine.
    with pytest.raises(RegistryError, match="did not answer within 3 s") as caught:
        docker_credentials("registry.example", config, helper_timeout=3)
    assert caught.value.exit_code == 4
    sleeper = int(pid_file.read_text())
    # The helper's child is gone (killed, or at worst a zombie of a dead parent).
    stat_file = Path(f"/proc/{sleeper}/stat")
    assert not stat_file.exists() or stat_file.read_text().split(") ")[1].startswith("Z")
