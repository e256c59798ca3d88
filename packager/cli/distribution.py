"""Distribution commands: publish, promote, approve, mirror, export, pull, search, root,
delegate."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from packager.cli import render, render_distribution, render_trust
from packager.cli.options import (
    DURATION,
    FILE,
    Context,
    SignedWrite,
    cert_chain_option,
    json_option,
    key_option,
    keys_option,
    load_public_keys,
    load_signing_key,
    now,
    open_registry_at,
    output_option,
    pass_ctx,
    registry_option,
    remote_options,
    signed_write_parameters,
    signing_key_option,
    upload_options,
    with_pinned_root,
)
from packager.errors import RegistryError, UsageError


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False, exists=True))
@registry_option
@upload_options
@key_option(required=False)
@json_option
@pass_ctx
def publish(
    ctx: Context,
    bundle: Path,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Publish a bundle directory to a registry (default: the embedded one).

    With --key the signature is verified first; without it the files are still
    checked against manifest.json so a damaged bundle is never published.
    """
    from packager.core.policy import Trusted, Unverified, adhoc_policy
    from packager.distribution.publish import publish_bundle

    registry = open_registry_at(ctx, registry_ref, writing=True)
    keys = load_public_keys(key_paths)
    artifact = publish_bundle(
        bundle,
        registry=registry,
        mode=Trusted(adhoc_policy(keys)) if keys else Unverified("publish without --key"),
    )
    render.show(
        ctx,
        render_distribution.PUBLISHED,
        render_distribution.Published(artifact, registry.location),
        as_json=as_json,
    )


@click.command()
@click.argument("name", required=False)
@click.option(
    "--attachments",
    is_flag=True,
    help="Also list the signed documents attached to each version of NAME (approvals...), "
    "as the registry claims them: installers verify them.",
)
@registry_option
@remote_options
@json_option
@pass_ctx
def search(
    ctx: Context, name: str | None, attachments: bool, registry_ref: str | None, as_json: bool
) -> None:
    """List the models and versions in a registry (exit 4 when NAME or the registry is not
    there); with --attachments, the signed documents beside each version of NAME."""
    from packager.distribution.search import catalog as read_catalog

    registry = open_registry_at(ctx, registry_ref)
    if attachments:
        from packager.distribution.approve import list_version_attachments

        if name is None:
            raise click.UsageError("--attachments lists the documents of one model: name it")
        listed = render_distribution.Attached(
            registry.location, name, list_version_attachments(registry, name)
        )
        render.show(ctx, render_distribution.ATTACHED, listed, as_json=as_json)
        return
    catalog = render_distribution.Catalog(registry.location, read_catalog(registry, name))
    render.show(ctx, render_distribution.CATALOG, catalog, as_json=as_json)


@click.command()
@click.argument("ref", metavar="NAME[@VERSION|@CHANNEL]")
@registry_option
@remote_options
@key_option(required=False)
@output_option(Path("."), "Directory to write NAME-VERSION/ into.")
@json_option
@pass_ctx
def pull(
    ctx: Context,
    ref: str,
    registry_ref: str | None,
    key_paths: tuple[Path, ...],
    out_dir: Path,
    as_json: bool,
) -> None:
    """Fetch and verify a model version (NAME@CHANNEL: the one the channel names) into a
    bundle directory, without installing it.

    Trusted keys and CAs come from --trust FILE, else $PACKAGER_HOME/trust.toml, else
    /etc/packager/trust.toml; --key adds keys to it (its revocations still apply), or is
    trusted alone when there is none; with a pinned root (`packager trust pin-root`), plus
    the keys the registry's delegations name, as for install.
    """
    from packager.core.names import parse_target
    from packager.distribution.pull import pull as do_pull
    from packager.instance.roots import instance_policy
    from packager.instance.store import Store

    target = parse_target(ref)
    policy = instance_policy(
        home=ctx.home,
        trust_file=ctx.trust_file,
        key_paths=key_paths,
        refusing="refusing to pull unverified models",
    )
    render_trust.unusable_keys(policy)
    registry = open_registry_at(ctx, registry_ref)
    # The instance's last accepted document of the channel: an older one is a replay.
    channel = target.channel
    seen = None if channel is None else Store(ctx.home).channel_seen(target.name, channel)
    bundle = do_pull(
        ref,
        registry=registry,
        mode=with_pinned_root(ctx, policy, registry, target.name),
        out_dir=out_dir,
        now=now(),
        progress=ctx.say,
        last_seen=seen,
    )
    render.show(ctx, render_distribution.PULLED, bundle, as_json=as_json)


@click.command()
@signed_write_parameters
@click.option("--channel", required=True, help="Channel to point at the version, e.g. stable.")
@click.option(
    "--expires",
    type=DURATION,
    default="30d",
    show_default=True,
    help="How long installers accept the document (e.g. 30d, 12h, 2w); promote again before.",
)
@click.option(
    "--sequence",
    type=click.IntRange(min=1),
    help="Sequence number to sign, when the current document is not this key's.",
)
@cert_chain_option
@json_option
@pass_ctx
def promote(
    ctx: Context,
    ref: str,
    channel: str,
    signing: SignedWrite,
    expires: timedelta,
    sequence: int | None,
    cert_chain: Path | None,
    as_json: bool,
) -> None:
    """Point CHANNEL of a model at NAME@VERSION with a signed, expiring document.

    Instances that installed NAME@CHANNEL move to it at their next `packager update`.
    """
    from packager._io.keys import load_certificate_chain
    from packager.distribution.promote import promote as do_promote

    chain = (
        ()
        if cert_chain is None
        else load_certificate_chain(cert_chain, private_key=signing["private_key"])
    )
    promotion = do_promote(
        ref,
        channel=channel,
        expires_in=expires,
        sequence=sequence,
        certificate_chain=chain,
        **signing,
    )
    render.show(ctx, render_distribution.PROMOTED, promotion, as_json=as_json)


@click.command()
@signed_write_parameters
@click.option("--role", required=True, help="The role you approve in, e.g. security-review.")
@click.option("--note", default="", help="A short text kept in the signed approval.")
@click.option(
    "--expires",
    type=DURATION,
    help="How long the approval counts (e.g. 90d, 2w); default: until revoked.",
)
@json_option
@pass_ctx
def approve(
    ctx: Context,
    ref: str,
    role: str,
    signing: SignedWrite,
    note: str,
    expires: timedelta | None,
    as_json: bool,
) -> None:
    """Sign off NAME@VERSION in a ROLE: a signed approval attached to that exact version.

    Instances whose trust policy requires approvals for the model install it only once
    every required role has approved it with a key holding that role.
    """
    from packager.distribution.approve import approve as do_approve

    approved = do_approve(ref, role=role, expires_in=expires, note=note, **signing)
    render.show(ctx, render_distribution.APPROVED, approved, as_json=as_json)


@click.command("revoke-approval")
@signed_write_parameters
@click.option("--role", help="Withdraw only the approvals in this role.")
@json_option
@pass_ctx
def revoke_approval(
    ctx: Context, ref: str, signing: SignedWrite, role: str | None, as_json: bool
) -> None:
    """Withdraw the approvals of NAME@VERSION made with --key (a signed revocation)."""
    from packager.distribution.approve import revoke_approvals

    withdrawn = revoke_approvals(ref, role=role, **signing)
    render.show(ctx, render_distribution.APPROVALS_REVOKED, withdrawn, as_json=as_json)


@click.command("export")
@click.argument("refs", nargs=-1, required=True, metavar="NAME[@VERSION]...")
@registry_option
@remote_options
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=FILE,
    help="Archive to write, ending in .tar (replaced if it exists).",
)
@click.option(
    "--base",
    metavar="NAME@VERSION",
    help="Leave out the files this version has: a delta for instances that hold it.",
)
@json_option
@pass_ctx
def export_cmd(
    ctx: Context,
    refs: tuple[str, ...],
    registry_ref: str | None,
    out: Path,
    base: str | None,
    as_json: bool,
) -> None:
    """Write model versions into an archive to carry across an air gap.

    The archive is an OCI image layout in a tar; NAME without @VERSION exports the
    latest release. On the other side: `packager install NAME --registry models.tar
    --key cosign.pub`, or `packager mirror models.tar DIR --key cosign.pub`. With
    --base, only what an instance holding the base lacks goes in.
    """
    from packager.distribution.mirror import export

    artifacts = export(
        list(refs),
        registry=open_registry_at(ctx, registry_ref),
        out=out,
        progress=ctx.say,
        base=base,
    )
    render.show(
        ctx,
        render_distribution.EXPORTED,
        render_distribution.Exported(out, artifacts),
        as_json=as_json,
    )


@click.command("gc")
@registry_option
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@json_option
@pass_ctx
def gc_cmd(ctx: Context, registry_ref: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove the blobs no manifest references from a registry directory.

    Replaced channel documents and what a killed publish left behind go; every tagged
    version, channel and trust document stays whole. Safe while publishes run: each
    model is swept under its write lock. What is not a regular file is left, with a
    warning; a path that is not a registry directory is refused (exit 4), and so is a
    model whose index.json or a manifest it tags is missing or unreadable: nothing of it
    is removed, and the other models are swept.
    """
    from packager.registry import LayoutRegistry

    registry = open_registry_at(ctx, registry_ref, writing=True)
    if not isinstance(registry, LayoutRegistry):
        raise UsageError(
            f"gc cleans a registry directory; {registry.location} is not one "
            "(an OCI registry collects its own garbage)"
        )
    refused: list[RegistryError] = []
    garbage = registry.collect_garbage(dry_run=dry_run, warn=render.warn, refused=refused.append)
    render.show(
        ctx,
        render_distribution.COLLECTED,
        render_distribution.Collected(garbage, dry_run),
        as_json=as_json,
    )
    for error in refused[1:]:
        render.warn(str(error))
    if refused:  # the models that need repair were left whole: exit 4
        raise refused[0]


@click.command("mirror")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.argument("refs", nargs=-1, metavar="[NAME[@VERSION]]...")
@upload_options
@key_option(required=False)
@click.option(
    "--no-verify",
    is_flag=True,
    help="DANGEROUS: copy without checking signatures (digests are still checked).",
)
@json_option
@pass_ctx
def mirror_cmd(
    ctx: Context,
    source: str,
    destination: str,
    refs: tuple[str, ...],
    key_paths: tuple[Path, ...],
    no_verify: bool,
    as_json: bool,
) -> None:
    """Copy models from registry SRC to registry DST, verifying every version first.

    SRC and DST are registries: a directory, an archive ending in .tar, oci://HOST/NS, or
    (SRC only) an https:// static mirror (the remote options apply to whichever of them is
    remote). Without NAME,
    every version of every model is copied; NAME alone copies all its versions. A version
    already in DST with the same content is skipped; one with other content is a conflict:
    left alone and listed, and the exit code is 4 once the others are copied. A .tar DST is
    rebuilt atomically and keeps what it held. Trusted keys and CAs come from --trust FILE,
    else $PACKAGER_HOME/trust.toml, else /etc/packager/trust.toml; --key adds keys to it
    (its revocations still apply), or is trusted alone when there is none; with a pinned
    root (`packager trust pin-root`), plus the keys SRC's delegations name.
    """
    from packager.core.policy import Trusted, TrustPolicy
    from packager.distribution.mirror import mirror, mirror_mode
    from packager.instance.roots import instance_policy

    def policy() -> TrustPolicy:
        trusted = instance_policy(
            home=ctx.home,
            trust_file=ctx.trust_file,
            key_paths=key_paths,
            refusing="refusing to copy unverified models (--no-verify copies without "
            "checking signatures)",
        )
        render_trust.unusable_keys(trusted)
        return trusted

    if no_verify:
        render.warn(render_distribution.MIRRORING_UNVERIFIED)
    mode = mirror_mode(policy, keys_given=bool(key_paths), no_verify=no_verify)
    origin = open_registry_at(ctx, source)
    if isinstance(mode, Trusted):
        mode = with_pinned_root(ctx, mode.policy, origin)
    report = mirror(
        origin,
        open_registry_at(ctx, destination, writing=True),
        list(refs),
        mode=mode,
        progress=ctx.say,
    )
    render.show(ctx, render_distribution.MIRRORED, report, as_json=as_json)
    report.check()


@click.group()
def root() -> None:
    """Make, sign and publish the root of trust (offline root keys)."""


@root.command("init")
@keys_option(
    "--key", "key_paths", "Root signing key at hand: a root key, and it signs now; repeat."
)
@keys_option(
    "--root-key", "root_pubs", "Public root key that signs later (`packager root sign`); repeat."
)
@click.option("--threshold", type=click.IntRange(min=1), required=True, help="Root keys needed.")
@keys_option(
    "--delegation-key",
    "delegation_pubs",
    "Public key of the online key that signs delegations; repeat.",
    required=True,
)
@click.option("--delegation-threshold", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--version", "version", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--expires", type=DURATION, default="365d", show_default=True)
@click.option("-o", "--output", type=FILE, required=True)
@pass_ctx
def root_init(
    ctx: Context,
    key_paths: tuple[Path, ...],
    root_pubs: tuple[Path, ...],
    threshold: int,
    delegation_pubs: tuple[Path, ...],
    delegation_threshold: int,
    version: int,
    expires: timedelta,
    output: Path,
) -> None:
    """Write a root document naming the root keys and the delegation keys.

    The next root (--version N+1) must also be signed by a threshold of the current
    root's keys: add their signatures with `packager root sign`.
    """
    from packager._io.fs import atomic_write
    from packager.distribution.root import RootSpec, init_root

    spec = RootSpec(
        signing_keys=[load_signing_key(p) for p in key_paths],
        threshold=threshold,
        delegation_keys=load_public_keys(delegation_pubs),
        other_root_keys=load_public_keys(root_pubs),
        delegation_threshold=delegation_threshold,
        version=version,
    )
    data = init_root(spec, now=now(), expires_in=expires)
    atomic_write(output, data, mode=0o644)
    render_trust.root_written(ctx, output, version, len(key_paths))


@root.command("sign")
@click.argument("document", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@signing_key_option
@pass_ctx
def root_sign(ctx: Context, document: Path, key_path: Path) -> None:
    """Add a signature by another root key (of this root or of the one before) to DOCUMENT."""
    from packager._io.fs import atomic_write
    from packager.distribution.root import sign_root

    data = sign_root(document.read_bytes(), private_key=load_signing_key(key_path))
    atomic_write(document, data, mode=0o644)
    ctx.say(f"{document}: signed")


@root.command("publish")
@click.argument("document", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@registry_option
@upload_options
@json_option
@pass_ctx
def root_publish(ctx: Context, document: Path, registry_ref: str | None, as_json: bool) -> None:
    """Store the root DOCUMENT in a registry once it verifies (the chain's next root)."""
    from packager.distribution.root import publish_root

    published = publish_root(
        document.read_bytes(), registry=open_registry_at(ctx, registry_ref, writing=True)
    )
    render.show(ctx, render_trust.TRUST_PUBLISHED, published, as_json=as_json)


@click.command()
@click.argument("models", metavar="NAME-GLOB")
@keys_option(
    "--key",
    "key_paths",
    "Public key that may sign these models (replaces the glob's keys); none removes it.",
)
@keys_option(
    "--delegation-key",
    "delegation_key_paths",
    "The online delegation key the newest root names; repeat up to its threshold.",
    required=True,
)
@click.option("--expires", type=DURATION, default="90d", show_default=True)
@registry_option
@upload_options
@json_option
@pass_ctx
def delegate(
    ctx: Context,
    models: str,
    key_paths: tuple[Path, ...],
    delegation_key_paths: tuple[Path, ...],
    expires: timedelta,
    registry_ref: str | None,
    as_json: bool,
) -> None:
    """Let the --key public keys sign models matching NAME-GLOB: signs and stores the next
    delegations version. Instances with a pinned root follow it at their next install."""
    from packager.distribution.root import delegate as do_delegate

    published = do_delegate(
        models,
        signer_keys=load_public_keys(key_paths),
        delegation_keys=[load_signing_key(p) for p in delegation_key_paths],
        registry=open_registry_at(ctx, registry_ref, writing=True),
        now=now(),
        expires_in=expires,
    )
    render.show(ctx, render_trust.TRUST_PUBLISHED, published, as_json=as_json)


COMMANDS = (
    publish,
    search,
    pull,
    promote,
    approve,
    revoke_approval,
    export_cmd,
    gc_cmd,
    mirror_cmd,
    root,
    delegate,
)
