"""Shared click options and the context object every command receives."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, cast

import click

from packager._io.config import resolve_home, resolve_registry
from packager.core.text import printable
from packager.errors import UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from packager.core.policy import Trusted, TrustPolicy
    from packager.core.text import Progress
    from packager.registry.base import Registry, RegistryReader
    from packager.registry.options import RegistryOptions

F = TypeVar("F", bound=Callable[..., Any])

# The kinds of path the commands take.
DIRECTORY = click.Path(path_type=Path, file_okay=False)
FILE = click.Path(path_type=Path, dir_okay=False)
EXISTING_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)


class _Duration(click.ParamType[timedelta]):
    """30d, 12h, 90m, 2w or 45s, as a timedelta of at most the longest any option takes
    (:data:`packager.core.channel.MAX_DURATION`)."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        from packager.core.channel import parse_duration

        # A packager UsageError, not click's: one line and exit 2 from main(), as every
        # other refused value.
        return parse_duration(value)


DURATION = _Duration()
# `update --jitter`: 0 (a templated value) waits not at all; a spread longer than a day
# would leave instances days behind their channel.
MAX_JITTER = timedelta(hours=24)


class Context:
    """What every command receives: the global options, wherever on the line they were
    typed, and whether failures are reported as JSON too (``--json``)."""

    def __init__(
        self, home: Path | None = None, quiet: bool = False, trust_file: Path | None = None
    ) -> None:
        self.home_option = home
        self.quiet = quiet
        self.trust_file = trust_file
        self.json_errors = False
        self.json_written = False

    @property
    def home(self) -> Path:
        """``--home``, else ``$PACKAGER_HOME``, else ~/.local/share/packager."""
        return resolve_home(self.home_option)

    def say(self, message: str) -> None:
        if not self.quiet:
            click.echo(printable(message, limit=None), err=True)


def _set_global(click_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Given twice (before and after the command), the later one wins, as it is parsed last.
    ctx = click_ctx.find_object(Context)
    if value and ctx is not None and param.name:
        setattr(ctx, param.name, value)
    return value


_GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--home", "home_option"),
        {
            "type": click.Path(path_type=Path, file_okay=False),
            "help": "State directory (default $PACKAGER_HOME, else ~/.local/share/packager).",
        },
    ),
    (("-q", "--quiet", "quiet"), {"is_flag": True, "help": "No progress messages on stderr."}),
    (
        ("--trust", "trust_file"),
        {
            "type": FILE,
            "help": "Trust policy (default $PACKAGER_HOME/trust.toml, then "
            "/etc/packager/trust.toml; `trust` edits the first).",
        },
    ),
)


def add_global_options(command: click.Command) -> None:
    """Accept ``--home``, ``-q`` and ``--trust`` on ``command`` and every command under it,
    before or after the command's name; the values land in the :class:`Context`."""
    for decls, attrs in _GLOBAL_OPTIONS:
        command.params.append(
            click.Option(decls, expose_value=False, callback=_set_global, **attrs)
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)


def _json_errors(click_ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx = click_ctx.find_object(Context)
    if value and ctx is not None:
        ctx.json_errors = True
    return value


def json_option(f: F) -> F:
    # Eager: a failure while the other options are read is reported as JSON too.
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=_json_errors,
        help='Print JSON on stdout (failures too: {"error": ..., "exitCode": ...}).',
    )(f)


def output_option(default: Path, help: str | None = None) -> Callable[[F], F]:
    """``-o/--output DIR`` (``out_dir``): the directory a command writes into."""
    return click.option(
        "-o", "--output", "out_dir", type=DIRECTORY, default=default, show_default=True, help=help
    )


def rows_option(*names: str, help: str, required: bool = True) -> Callable[[F], F]:
    """An existing file of rows (.csv with header, .npy, .json)."""
    return click.option(*names, required=required, type=EXISTING_FILE, help=help)


def labelled_rows_options(
    flag: str, dest: str, *, help: str, target_help: str
) -> tuple[Callable[[F], F], Callable[[F], F]]:
    """``flag``, an optional file of rows (into ``dest``), and ``--target``, the column of
    those rows holding the true answers (class or value)."""
    return rows_option(flag, dest, required=False, help=help), click.option(
        "--target", help=target_help
    )


def registry_option(f: F) -> F:
    return click.option(
        "--registry",
        "registry_ref",
        metavar="REF",
        help="Registry: a directory (default $PACKAGER_HOME/registry, or $PACKAGER_REGISTRY), "
        "oci://HOST[:PORT]/NAMESPACE, an https:// static mirror, or an archive .tar.",
    )(f)


def _remember(click_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    click_ctx.meta[f"packager.registry.{param.name}"] = value
    return value


def remote_options(f: F) -> F:
    """How to reach an oci:// registry or https:// mirror; open_registry_at turns these
    into RegistryOptions."""
    options = [
        click.option(
            "--username",
            metavar="USER",
            expose_value=False,
            callback=_remember,
            help="Registry user (or $PACKAGER_REGISTRY_USERNAME; else docker config.json).",
        ),
        click.option(
            "--password-stdin",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Read the registry password or token from stdin (or $PACKAGER_REGISTRY_PASSWORD).",
        ),
        click.option(
            "--ca-cert",
            type=EXISTING_FILE,
            expose_value=False,
            callback=_remember,
            help="PEM CA bundle to verify the registry's TLS certificate with.",
        ),
        click.option(
            "--plain-http",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Allow unencrypted HTTP to the registry (always allowed for loopback).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def upload_options(f: F) -> F:
    """:func:`remote_options` and what only matters when uploading, for commands that write
    to a registry."""
    f = click.option(
        "--chunk-size",
        metavar="SIZE",
        expose_value=False,
        callback=_remember,
        help="Upload blobs larger than SIZE in chunks of SIZE (e.g. 16M; default 64M).",
    )(f)
    return remote_options(f)


def registry_options(ctx: Context) -> RegistryOptions:
    """RegistryOptions from the remote options of this command and the environment."""
    from packager.registry.options import DEFAULT_CHUNK_SIZE, options_from_environment, parse_size

    meta = click.get_current_context().meta
    if "packager.registry.options" not in meta:
        password = None
        if meta.get("packager.registry.password_stdin"):
            password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
            if not password:
                raise UsageError("--password-stdin: stdin is empty; pipe the password in")
        chunk_size = meta.get("packager.registry.chunk_size")
        meta["packager.registry.options"] = options_from_environment(
            username=meta.get("packager.registry.username"),
            password=password,
            ca_cert=meta.get("packager.registry.ca_cert"),
            plain_http=bool(meta.get("packager.registry.plain_http")),
            chunk_size=parse_size(chunk_size) if chunk_size else DEFAULT_CHUNK_SIZE,
            progress=not ctx.quiet and sys.stderr.isatty(),
        )
    options: RegistryOptions = meta["packager.registry.options"]
    return options


def _key_option(dest: str, help: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option("--key", dest, type=FILE, help=help, **kwargs)


def keys_option(flag: str, dest: str, help: str, *, required: bool = False) -> Callable[[F], F]:
    """``flag``, repeatable, into ``dest``: key files."""
    return click.option(flag, dest, type=FILE, help=help, multiple=True, required=required)


def key_option(required: bool) -> Callable[[F], F]:
    """``--key``, repeatable (``key_paths``): the public keys to trust."""
    help = "Trusted public key (cosign.pub); repeat for several."
    return keys_option("--key", "key_paths", help, required=required)


signing_key_option = _key_option(
    "key_path", "Signing key: cosign.key, or a PKCS#8 / SEC1 EC PEM key.", required=True
)
cert_chain_option = click.option(
    "--cert-chain",
    "cert_chain",
    type=FILE,
    help="PEM certificate chain for --key (its certificate first, then intermediates).",
)


def exact_ref(ref: str, command: str) -> tuple[str, str]:
    """NAME@VERSION, or UsageError naming ``command``."""
    from packager.core.names import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise UsageError(f"{command} needs NAME@VERSION")
    return name, version


def now() -> datetime:
    return datetime.now(UTC)


def open_registry_at(ctx: Context, ref: str | None, *, writing: bool = False):  # type: ignore[no-untyped-def]
    """The registry ``ref`` names; ``writing`` refuses one that cannot be written (exit 2)."""
    from packager.registry import open_destination, open_registry

    opener = open_destination if writing else open_registry
    return opener(resolve_registry(ref), home=ctx.home, options=registry_options(ctx))


def with_pinned_root(
    ctx: Context, policy: TrustPolicy, registry: RegistryReader, name: str | None = None
) -> Trusted:
    """``policy`` with the delegations of the root of trust pinned in ``ctx.home``, read
    from ``registry``, exactly as install applies them
    (:func:`packager.instance.roots.trusted_mode`); ``policy`` alone without a pinned root.

    Raises:
        VerificationError, RegistryError: as :func:`~packager.instance.roots.trusted_mode`.
    """
    from packager.core.policy import Trusted
    from packager.instance.roots import trusted_mode
    from packager.instance.store import Store

    mode = trusted_mode(
        Trusted(policy),
        registry=registry,
        store=Store(ctx.home),
        now=now(),
        name=name,
        progress=ctx.say,
    )
    assert isinstance(mode, Trusted)  # a trusted mode stays trusted, with more keys
    return mode


def load_signing_key(path: Path) -> EllipticCurvePrivateKey:
    """The private key in ``path``, its password (where it has one) from the environment or
    a prompt (:func:`packager._io.keys.password_from_environment`)."""
    from packager._io.keys import load_private_key, password_from_environment

    return load_private_key(path, password=password_from_environment)


class SignedWrite(TypedDict):
    """What a command signing a document into a registry hands on: the registry, open for
    writing, the signing key, the time of signing and where progress goes."""

    registry: Registry
    private_key: EllipticCurvePrivateKey
    now: datetime
    progress: Progress


def _signed_write(key_path: Path, registry_ref: str | None) -> SignedWrite:
    """The registry ``registry_ref`` names (open for writing) and the key in ``key_path``."""
    ctx = click.get_current_context().find_object(Context)
    if ctx is None:
        raise RuntimeError("packager commands run with a Context as their object")
    private_key = load_signing_key(key_path)
    return SignedWrite(
        registry=open_registry_at(ctx, registry_ref, writing=True),
        private_key=private_key,
        now=now(),
        progress=ctx.say,
    )


def load_public_keys(paths: tuple[Path, ...]) -> list[Any]:
    from packager._io.keys import load_public_key

    return [load_public_key(p) for p in paths]


pass_ctx = click.make_pass_decorator(Context)


def option_group(
    dest: str, make: Callable[..., Any], *options: Callable[[Any], Any]
) -> Callable[[F], F]:
    """Put ``options`` on a command and hand it one object instead of their values:
    ``make(**values)``, as its parameter ``dest``."""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return f(*args, **kwargs, **{dest: make(**values)})

        before = len(getattr(command, "__click_params__", ()))
        for option in reversed(options):
            command = option(command)
        params: list[click.Parameter] = getattr(command, "__click_params__", [])
        names = [param.name for param in params[before:] if param.name]
        return cast(F, command)

    return decorate


def signed_write_parameters(f: F) -> F:
    """What every command signing a document about one version into a registry takes:
    NAME@VERSION (``ref``), ``--key`` (the signing key) and ``--registry`` with the
    options to upload to it. The command gets one :class:`SignedWrite`, ``signing``,
    instead of the values of ``--key`` and ``--registry`` (the key loaded, the registry
    open for writing)."""
    f = option_group("signing", _signed_write, signing_key_option, registry_option)(f)
    return click.argument("ref", metavar="NAME@VERSION")(upload_options(f))
