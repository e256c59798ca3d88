"""Instance commands: install, update, list, rollback, remove, uninstall, predict, log, trust."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from packager._io.config import read_retention, resolve_registry
from packager.cli import render, render_instance, render_trust
from packager.cli.options import (
    FILE,
    MAX_JITTER,
    Context,
    exact_ref,
    json_option,
    key_option,
    now,
    open_registry_at,
    pass_ctx,
    registry_option,
    remote_options,
)
from packager.errors import PackagerError, UsageError

if TYPE_CHECKING:
    from packager.instance.smoke import SmokeLimits
    from packager.instance.store import Store

F = TypeVar("F", bound=Callable[..., Any])
SECONDS = click.FloatRange(min=0, min_open=True)


def lock_option(f: F) -> F:
    return click.option(
        "--lock-timeout",
        type=SECONDS,
        default=600,
        show_default=True,
        metavar="SECONDS",
        help="Wait at most this long for another install, rollback or removal of the model.",
    )(f)


def smoke_options(f: F) -> F:
    f = click.option(
        "--smoke-memory",
        metavar="SIZE",
        help="Memory cap of the smoke test (e.g. 8G; default 4 x the bundle, at least 2G).",
    )(f)
    return click.option(
        "--smoke-timeout",
        type=SECONDS,
        metavar="SECONDS",
        help="Time limit of the smoke test (default 120 s + 60 s per GiB of bundle).",
    )(f)


def smoke_limits(seconds: float | None, memory: str | None) -> SmokeLimits:
    from packager.instance.smoke import SmokeLimits
    from packager.registry.options import parse_size

    return SmokeLimits(seconds, None if memory is None else parse_size(memory))


@click.command()
@click.argument("ref", metavar="NAME[@VERSION|@CHANNEL] | ARCHIVE.tar")
@registry_option
@remote_options
@key_option(required=False)
@click.option("--allow-downgrade", is_flag=True, help="Install below the rollback floor.")
@click.option(
    "--force",
    is_flag=True,
    help="Install again the version already current (fetch, verify, smoke test, repair).",
)
@smoke_options
@lock_option
@click.option(
    "--insecure-skip-verify",
    is_flag=True,
    help="DANGEROUS: do not check the signature (digests are still checked); audited.",
)
@json_option
@pass_ctx
def install(
    ctx: Context,
    ref: str,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    allow_downgrade: bool,
    force: bool,
    smoke_timeout: float | None,
    smoke_memory: str | None,
    lock_timeout: float,
    insecure_skip_verify: bool,
    as_json: bool,
) -> None:
    """Fetch, verify, smoke-test and atomically install a model version.

    NAME@CHANNEL (e.g. iris@stable) installs the version the channel's signed document
    names, and the model then follows the channel (`packager update`); installing by
    version (or an archive) stops following. The version already current is not installed
    again unless --force, only checked again against the trust policy. The trust policy is
    --trust FILE, else $PACKAGER_HOME/trust.toml, else /etc/packager/trust.toml; --key adds
    keys to it (its revocations, approvals, licences and minimums still apply), or is
    trusted alone when there is none; with neither (and no pinned root: `packager trust
    pin-root`), install refuses.
    """
    from packager.core.policy import Trusted, Unverified, VerifyMode
    from packager.instance.install import InstallOptions, only_model
    from packager.instance.install import install as do_install
    from packager.instance.roots import instance_policy
    from packager.instance.store import Store

    keep = read_retention(ctx.home)  # a bad setting is refused before anything changes
    if ref.endswith(".tar") and Path(ref).is_file():
        # `packager install ./models.tar`: the archive is the registry; it must hold one model.
        if registry_ref:
            raise UsageError("give either an archive or --registry, not both")
        registry_ref = ref
        ref = only_model(open_registry_at(ctx, ref), ref)
    if insecure_skip_verify:
        render.warn(render_instance.SKIPPING_VERIFICATION)
        mode: VerifyMode = Unverified("--insecure-skip-verify")
    else:
        policy = instance_policy(home=ctx.home, trust_file=ctx.trust_file, key_paths=key_paths)
        render_trust.unusable_keys(policy)
        mode = Trusted(policy)
    store = Store(ctx.home, lock_timeout=lock_timeout)
    result = do_install(
        ref,
        registry=open_registry_at(ctx, registry_ref),
        store=store,
        now=now(),
        options=InstallOptions(
            verify=mode,
            allow_downgrade=allow_downgrade,
            registry_ref=resolve_registry(registry_ref),
            progress=ctx.say,
            smoke=smoke_limits(smoke_timeout, smoke_memory),
            force=force,
        ),
    )
    render_instance.unfollowed(result.name, result.unfollowed, result.version)
    render.show(ctx, render_instance.INSTALLED, result, as_json=as_json)
    if keep is not None and result.smoke_test is not None:
        retain(ctx, store, [result.name], keep)


def retain(ctx: Context, store: Store, names: list[str], keep: int) -> None:
    """Apply the retention setting to models just installed (notes on stderr).

    The install already succeeded: a model that cannot be pruned now (another process
    holds its lock) is warned about and audited, and the command keeps its exit code;
    the next install, update or `prune` removes what it left.
    """
    from packager.instance.retention import prune

    for name in names:
        try:
            prune(store, keep=keep, now=now(), names=[name], say=ctx.say)
        except (PackagerError, OSError) as e:
            render.warn(f"{name}: old versions not pruned ({e}); `packager prune` removes them")
            _audit_retention_failure(store, name, e)


def _audit_retention_failure(store: Store, name: str, error: Exception) -> None:
    """A retention that failed, in the audit log beside the removals of those that ran."""
    try:
        store.audit(
            action="prune",
            outcome="failed",
            now=now(),
            name=name,
            detail=f"retention after install: {type(error).__name__}: {error}",
        )
    except PackagerError as e:  # state.db unusable: the warning above is all there is
        render.warn(f"{name}: the failed pruning is not in the audit log ({e})")


@click.command("list")
@json_option
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """List installed models (* marks the current version) and the channel each follows,
    with the days left before its document expires."""
    from packager.instance.store import Store

    store = Store(ctx.home)
    try:
        followed = store.followed()
    except UsageError as e:  # state.db unusable: the installed versions are still listed
        render.warn(f"channels not shown: {e}")
        followed = {}
    listing = render_instance.Listing(store.installed(), followed, now())
    render_instance.expiring(listing.followed, listing.now)
    render.show(ctx, render_instance.LISTED, listing, as_json=as_json)


@click.command()
@click.argument("name")
@lock_option
@json_option
@pass_ctx
def rollback(ctx: Context, name: str, lock_timeout: float, as_json: bool) -> None:
    """Make the previously active installed version current again (the model stops
    following its channel, if it followed one). With a trust policy file, the version
    gone back to must still pass it (a key revoked, the minimum, licence rules), judged
    from its installed signature with no registry."""
    from packager.core.policy import Trusted
    from packager.instance.install import rollback as do_rollback
    from packager.instance.store import Store
    from packager.instance.trust import policy_path, resolve_policy

    verify = None
    if policy_path(home=ctx.home, explicit=ctx.trust_file) is not None:
        policy = resolve_policy(home=ctx.home, trust_file=ctx.trust_file)
        render_trust.unusable_keys(policy)
        verify = Trusted(policy)
    store = Store(ctx.home, lock_timeout=lock_timeout)
    result = do_rollback(name, store=store, now=now(), verify=verify)
    render_instance.unfollowed(name, result.unfollowed, result.version)
    render.show(ctx, render_instance.ROLLED_BACK, result, as_json=as_json)


@click.command()
@click.argument("ref", metavar="NAME@VERSION")
@lock_option
@json_option
@pass_ctx
def remove(ctx: Context, ref: str, lock_timeout: float, as_json: bool) -> None:
    """Delete an installed version that is not current, nor pinned (`unpin` it first)."""
    from packager.instance.install import remove as do_remove
    from packager.instance.store import Store

    name, version = exact_ref(ref, "remove")
    do_remove(name, version, store=Store(ctx.home, lock_timeout=lock_timeout), now=now())
    render.show(
        ctx, render_instance.REMOVED, render_instance.Removed(name, (version,)), as_json=as_json
    )


@click.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask, even when the model is in use.")
@lock_option
@json_option
@pass_ctx
def uninstall(ctx: Context, name: str, yes: bool, lock_timeout: float, as_json: bool) -> None:
    """Delete every installed version of NAME and its `current` link.

    The audit log and the rollback floor stay: installing NAME again cannot go below
    the highest version it had. The model stops following its channel and its pins go.
    When NAME has a current version (services may be using it), asks first; without a
    terminal, refuses unless --yes.
    """
    from packager.instance.install import uninstall as do_uninstall
    from packager.instance.store import Store

    store = Store(ctx.home, lock_timeout=lock_timeout)
    current = store.current_version(name)
    if current is not None and not yes:
        _confirm(f"{name}@{current} is current: delete every installed version of {name}?")
    versions = do_uninstall(name, store=store, now=now())
    render.show(
        ctx,
        render_instance.REMOVED,
        render_instance.Removed(name, tuple(versions)),
        as_json=as_json,
    )


def _confirm(question: str) -> None:
    """Ask ``question`` on a terminal; without one, refuse (exit 2) naming --yes."""
    import sys

    if not sys.stdin.isatty():
        raise UsageError(f"{question.removesuffix('?')}: not without --yes")
    if not click.confirm(question, err=True):
        raise UsageError("nothing deleted")


@click.command()
@click.argument("name", required=False)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    help="Versions to keep per model, the most recently active first (default: "
    "[retention] keep in $PACKAGER_HOME/config.toml).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@lock_option
@json_option
@pass_ctx
def prune(
    ctx: Context,
    name: str | None,
    keep: int | None,
    dry_run: bool,
    lock_timeout: float,
    as_json: bool,
) -> None:
    """Remove old installed versions of NAME (default: every model).

    Never the current version, the one `packager rollback` would return to, or a pinned one.
    """
    from packager.instance.retention import prune as do_prune
    from packager.instance.store import Store

    keep = keep or read_retention(ctx.home)
    if keep is None:
        raise UsageError(
            f"give --keep N, or set [retention] keep = N in {ctx.home / 'config.toml'}"
        )
    store = Store(ctx.home, lock_timeout=lock_timeout)
    names = None if name is None else [name]
    pruned = do_prune(store, keep=keep, now=now(), names=names, dry_run=dry_run)
    render.show(ctx, render_instance.PRUNED, pruned, as_json=as_json)


@click.command()
@click.argument("ref", metavar="NAME@VERSION")
@pass_ctx
def pin(ctx: Context, ref: str) -> None:
    """Keep an installed version whatever `prune` and the retention setting say (`remove`
    refuses it until `unpin`; `uninstall` drops the pins of the model)."""
    from packager.instance.store import Store

    name, version = exact_ref(ref, "pin")
    Store(ctx.home).pin(name, version, now=now())
    ctx.say(f"pinned {name}@{version}")


@click.command()
@click.argument("ref", metavar="NAME@VERSION")
@pass_ctx
def unpin(ctx: Context, ref: str) -> None:
    """Let `prune` remove a pinned version again."""
    from packager.instance.store import Store

    name, version = exact_ref(ref, "unpin")
    if not Store(ctx.home).unpin(name, version, now=now()):
        raise UsageError(f"{name}@{version} is not pinned")
    ctx.say(f"unpinned {name}@{version}")


@click.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True),
    help="Rows to predict: .csv with header, .json, .ndjson, .npy; - reads standard input.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "ndjson", "npy"]),
    help="Format of --input (default: from the file name; for - or another name, sniffed).",
)
@json_option
@pass_ctx
def predict(ctx: Context, ref: str, input_path: Path, fmt: str | None, as_json: bool) -> None:
    """Run an installed model on rows from a file or standard input.

    Rows are records (a CSV header, JSON objects) or lists of values in the order of the
    model's inputs (`packager inspect` lists them).
    """
    from packager._io.table import read_input
    from packager.core.names import parse_ref
    from packager.instance.models import load

    name, version = parse_ref(ref)
    model = load(name, version, home=ctx.home)
    outputs = model.predict(read_input(input_path, fmt))
    prediction = render_instance.Prediction(
        model.manifest.ref, {k: v.tolist() for k, v in outputs.items()}
    )
    render.show(ctx, render_instance.PREDICTION, prediction, as_json=as_json)


@click.command()
@registry_option
@remote_options
@key_option(required=False)
@smoke_options
@lock_option
@click.option(
    "--jitter",
    metavar="DURATION",
    help="First sleep a random time up to DURATION (e.g. 30m, 2h, 45s; at most 1d; 0: "
    "no wait), so that a fleet run by one schedule does not reach the registry at once.",
)
@json_option
@pass_ctx
def update(
    ctx: Context,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    smoke_timeout: float | None,
    smoke_memory: str | None,
    lock_timeout: float,
    jitter: str | None,
    as_json: bool,
) -> None:
    """Install what their channel names for every model that follows one.

    Each model is read from the registry it was installed from (--registry: from REF,
    for this run only), with every check of `install NAME@CHANNEL`. A failing model does
    not stop the others and keeps serving what it had; the exit code is then the most
    important failure's (3, then 5, then 4), and `packager status` shows it. An update
    that fails before any model (a bad config.toml or --jitter, no trust policy) shows in
    `packager status` as every followed model's last update, `failed`.
    """
    from packager.core.channel import parse_duration
    from packager.core.policy import Trusted
    from packager.instance.install import InstallOptions
    from packager.instance.roots import instance_policy
    from packager.instance.store import Store
    from packager.instance.update import jitter as sleep_jitter
    from packager.instance.update import record_failure
    from packager.instance.update import update as do_update

    store = Store(ctx.home, lock_timeout=lock_timeout)
    try:
        # Parsed here, not by click: a bad value in a cron line shows in `status` too.
        wait = None if jitter is None else parse_duration(jitter, most=MAX_JITTER, allow_zero=True)
        keep = read_retention(ctx.home)
        policy = instance_policy(home=ctx.home, trust_file=ctx.trust_file, key_paths=key_paths)
    except PackagerError as e:
        # Monitoring must not go on showing the last run's success.
        try:
            record_failure(store, now(), e)
        except PackagerError as unrecorded:
            render.warn(f"`packager status` does not show this failure: {unrecorded}")
        raise
    render_trust.unusable_keys(policy)
    if wait:  # None or 0: no wait
        sleep_jitter(wait, say=ctx.say)
    report = do_update(
        store=store,
        now=now(),
        # A model recorded without a registry uses the default one ($PACKAGER_REGISTRY, else
        # the embedded one); only --registry overrides what each model recorded.
        open_registry=lambda ref: open_registry_at(ctx, ref),
        options=InstallOptions(
            verify=Trusted(policy),
            registry_ref=registry_ref,
            progress=ctx.say,
            smoke=smoke_limits(smoke_timeout, smoke_memory),
        ),
    )
    render.show(ctx, render_instance.UPDATED, report, as_json=as_json)
    render_instance.expiring(Store(ctx.home).followed(), now())
    if keep is not None:
        retain(ctx, store, [m.name for m in report.models if m.status == "updated"], keep)
    report.check()


@click.command()
@click.argument("name", required=False)
@json_option
@pass_ctx
def log(ctx: Context, name: str | None, as_json: bool) -> None:
    """Show the audit log: every install, refusal, rollback, removal and channel event."""
    from packager.instance.store import Store

    render.show(ctx, render_instance.AUDIT_LOG, Store(ctx.home).audit_log(name), as_json=as_json)


@click.command()
@json_option
@click.option(
    "--openmetrics",
    is_flag=True,
    help="Print OpenMetrics text (for node_exporter's textfile collector).",
)
@click.option(
    "-o",
    "--output",
    "output",
    type=FILE,
    help="Write to this file atomically instead of stdout (e.g. a textfile collector's .prom).",
)
@pass_ctx
def status(ctx: Context, as_json: bool, openmetrics: bool, output: Path | None) -> None:
    """How each model stands: current version, channel and its expiry, last update and
    its outcome, last refusal and why, disk used. Reads only this instance's state."""
    from packager.instance.status import status as gather
    from packager.instance.store import Store

    if as_json and openmetrics:
        raise UsageError("give either --json or --openmetrics, not both")
    result = gather(Store(ctx.home), now=now())
    render_instance.show_status(
        ctx, result, as_json=as_json, openmetrics=openmetrics, output=output
    )


@click.group()
def trust() -> None:
    """Manage the trust policy (--trust FILE, default $PACKAGER_HOME/trust.toml): which keys
    and CAs may sign which models."""


def _trust_file() -> Path:
    ctx = click.get_current_context().find_object(Context)
    assert ctx is not None
    return ctx.trust_file or ctx.home / "trust.toml"


@trust.command("add-key")
@click.argument("name")
@click.argument("pub", type=FILE)
@click.option(
    "--models",
    help="Glob of model names it may sign (default: '*', or none with --role).",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="A role the key may approve in, e.g. security-review (repeatable).",
)
@pass_ctx
def trust_add_key(
    ctx: Context, name: str, pub: Path, models: str | None, roles: tuple[str, ...]
) -> None:
    """Trust the public key PUB, under NAME, to sign models matching --models, or to
    approve them in each --role."""
    from packager.instance.store import Store
    from packager.instance.trust import add_key

    path = _trust_file()
    if models is None and not roles:
        models = "*"
    add_key(path, name, pub, models=models, roles=roles, store=Store(ctx.home))
    render_trust.key_trusted(ctx, path, name, models, roles)


@trust.command("allow-license")
@click.argument("models", metavar="GLOB")
@click.argument("licenses", nargs=-1, required=True, metavar="SPDX-ID...")
@click.option(
    "--training-data",
    is_flag=True,
    help="Also require every training data file's recorded licence to be allowed.",
)
@pass_ctx
def trust_allow_license(
    ctx: Context, models: str, licenses: tuple[str, ...], training_data: bool
) -> None:
    """Install models matching GLOB only under these licences (an expression's OR needs one
    allowed, AND all; 'L WITH E' must be listed as such), e.g.
    `trust allow-license 'security-*' MIT Apache-2.0`."""
    from packager.instance.trust import allow_licenses

    path = _trust_file()
    from packager.instance.store import Store

    rule = allow_licenses(
        path, models, licenses, training_data=training_data, store=Store(ctx.home)
    )
    render_trust.licenses_allowed(ctx, path, rule)


@trust.command("require-approval")
@click.argument("models", metavar="GLOB")
@click.argument("requirements", nargs=-1, required=True, metavar="ROLE[=COUNT]...")
@pass_ctx
def trust_require_approval(ctx: Context, models: str, requirements: tuple[str, ...]) -> None:
    """Install models matching GLOB only with COUNT approvals (default 1) by distinct keys
    holding each ROLE, e.g. `trust require-approval 'security-*' security-review legal=2`."""
    from packager.instance.trust import require_approvals

    path = _trust_file()
    from packager.instance.store import Store

    rule = require_approvals(path, models, requirements, store=Store(ctx.home))
    render_trust.approvals_required(ctx, path, rule)


@trust.command("add-ca")
@click.argument("name")
@click.argument("certificate", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--models", default="*", show_default=True, help="Glob of model names it may sign.")
@click.option(
    "--identity",
    "identities",
    multiple=True,
    help="Signer the leaf certificate must name: email:ADDRESS, uri:URI or subject:DN "
    "(repeatable: any one; none: any signer the CA certifies).",
)
@pass_ctx
def trust_add_ca(
    ctx: Context, name: str, certificate: Path, models: str, identities: tuple[str, ...]
) -> None:
    """Trust the CA certificate CERTIFICATE, under NAME, to certify signers of --models."""
    from packager.instance.store import Store
    from packager.instance.trust import add_ca

    path = _trust_file()
    add_ca(path, name, certificate, models=models, identities=identities, store=Store(ctx.home))
    render_trust.ca_trusted(ctx, path, name, models, identities)


@trust.command("revoke")
@click.argument("name")
@pass_ctx
def trust_revoke(ctx: Context, name: str) -> None:
    """Revoke key or CA NAME: refused from now on, even where a rule lists it."""
    from packager.instance.store import Store
    from packager.instance.trust import revoke_key

    path = _trust_file()
    revoke_key(path, name, store=Store(ctx.home))
    render_trust.key_revoked(ctx, path, name)


@trust.command("unrevoke")
@click.argument("name")
@pass_ctx
def trust_unrevoke(ctx: Context, name: str) -> None:
    """Trust revoked key or CA NAME again where the rules list it (audited); `add-key`
    never does."""
    from packager.instance.store import Store
    from packager.instance.trust import unrevoke_key

    path = _trust_file()
    unrevoke_key(path, name, store=Store(ctx.home))
    render_trust.key_unrevoked(ctx, path, name)


@trust.command("minimum")
@click.argument("ref", metavar="NAME@VERSION")
@pass_ctx
def trust_minimum(ctx: Context, ref: str) -> None:
    """Never install NAME below VERSION on this instance."""
    from packager.instance.store import Store
    from packager.instance.trust import set_minimum

    name, version = exact_ref(ref, "trust minimum")
    path = _trust_file()
    set_minimum(path, name, version, store=Store(ctx.home))
    render_trust.minimum_set(ctx, path, name, version)


@trust.command("list")
@json_option
@pass_ctx
def trust_list(ctx: Context, as_json: bool) -> None:
    """Show the trusted keys, rules and minimum versions."""
    from packager.instance.trust import read_policy

    path = _trust_file()
    if not path.exists():
        raise UsageError(f"no trust policy at {path}; add a key with `packager trust add-key`")
    render.show(
        ctx, render_trust.POLICY, render_trust.Policy(path, read_policy(path)), as_json=as_json
    )


@trust.command("pin-root")
@click.argument("document", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@pass_ctx
def trust_pin_root(ctx: Context, document: Path) -> None:
    """Pin the root of trust DOCUMENT (root.json from the publisher, checked out of band).

    From then on install and update follow the registry's newer roots and delegations.
    """
    from packager.instance.roots import pin
    from packager.instance.store import Store

    root = pin(Store(ctx.home), document.read_bytes(), now=now())
    render_trust.root_pinned(ctx, root.version)


def _listen_options(f: Callable[..., None]) -> Callable[..., None]:
    """--host, --port and --unix-socket, passed on as one ``listen`` (host, port, socket)."""

    @functools.wraps(f)
    def command(*args: Any, host: str, port: int, unix_socket: Path | None, **kwargs: Any) -> None:
        f(*args, listen=(host, port, unix_socket), **kwargs)

    options = (
        click.option(
            "--host", default="127.0.0.1", show_default=True, help="Address to listen on."
        ),
        click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=8080,
            show_default=True,
            help="TCP port (0: any free port, printed at start).",
        ),
        click.option(
            "--unix-socket",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Listen on this Unix socket instead of TCP.",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@_listen_options
@click.option(
    "--max-request-size",
    default="16M",
    show_default=True,
    metavar="SIZE",
    help="Larger request bodies are refused (413).",
)
@click.option(
    "--max-reading-size",
    default="256M",
    show_default=True,
    metavar="SIZE",
    help="Request bodies being read, in all: a request whose body would pass it is "
    "refused (503, Retry-After).",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Inference requests in the server at once (queued for the threads); "
    "one more is refused (503, Retry-After).",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Inference threads.",
)
@click.option(
    "--poll-interval",
    type=SECONDS,
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="How often to look for a new current version (SIGHUP: at once).",
)
@click.option(
    "--shutdown-timeout",
    type=SECONDS,
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM, wait this long at most for requests in flight.",
)
@click.option(
    "--read-timeout",
    type=SECONDS,
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="A request whose line and headers, or whose body, are not received whole within "
    "this is refused (408); until its body is in, a request does not count against "
    "--max-concurrent.",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    metavar="ROWS",
    help="Run the inference requests for one model that are read at the same time as one "
    "batch of at most ROWS rows (1: each alone). Only for models whose rows are "
    "independent (scikit-learn, XGBoost, LightGBM).",
)
@pass_ctx
def serve(
    ctx: Context,
    names: tuple[str, ...],
    listen: tuple[str, int, Path | None],
    max_request_size: str,
    max_reading_size: str,
    max_concurrent: int,
    threads: int,
    poll_interval: float,
    shutdown_timeout: float,
    read_timeout: float,
    max_batch_size: int,
) -> None:
    """Serve installed models over the Open Inference Protocol v2 (KServe, Triton).

    Serves NAME... (default: every installed model) at their current version, and the
    new current version within a second of an install, update or rollback (at once on
    SIGHUP), without dropping a request. Needs the serve extra:
    pip install 'onnx-packager[serve]'.
    """
    from packager.instance import serve as server
    from packager.instance.store import Store
    from packager.registry.options import parse_size

    if parse_size(max_reading_size) < parse_size(max_request_size):
        raise UsageError(
            "--max-reading-size must be at least --max-request-size: a body it allows "
            "would otherwise be refused for ever"
        )
    options = server.ServeOptions(
        names=names,
        listen=server.Listen(*listen),
        max_request_bytes=parse_size(max_request_size),
        max_reading_bytes=parse_size(max_reading_size),
        max_concurrent=max_concurrent,
        threads=threads,
        poll_seconds=poll_interval,
        shutdown_seconds=shutdown_timeout,
        read_seconds=read_timeout,
        max_batch_size=max_batch_size,
    )
    served = server.load(Store(ctx.home), options, render.line_err)
    sock = server.bind(options.listen)
    server.run(
        served,
        sock,
        options,
        render.line_err,
        ready=lambda where: render_instance.serving(ctx, where, served.loaded()),
    )


COMMANDS = (
    install,
    update,
    list_cmd,
    rollback,
    remove,
    uninstall,
    prune,
    pin,
    unpin,
    predict,
    serve,
    log,
    status,
    trust,
)
