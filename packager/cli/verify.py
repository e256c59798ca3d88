"""``packager verify``: a command of its own module, so that hashing the bundle starts
before the build commands (and their options) would have been imported."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from packager.cli.options import DIRECTORY, Context, json_option, key_option, pass_ctx

if TYPE_CHECKING:
    from packager.core.policy import Trusted


@click.command()
@click.argument("bundle", type=DIRECTORY)
@key_option(required=False)
@json_option
@pass_ctx
def verify(
    ctx: Context,
    bundle: Path,
    key_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Verify a bundle directory's signature and every file's digest.

    With --key, exactly those keys are trusted, and no trust policy decides: it checks
    that one of them signed the bundle (with a warning when the trust policy that would
    otherwise apply revokes the key that did). Without, the trusted keys and CAs come from
    --trust FILE, else $PACKAGER_HOME/trust.toml, else /etc/packager/trust.toml. Either
    way it says who signed.
    """
    from packager._io.bundledir import verify_bundle_signer

    def mode() -> Trusted:
        # verify_bundle_signer calls this once hashing has started: what is imported here,
        # the output's modules too, loads while the files hash.
        importlib.import_module("packager.cli.render_build")
        from packager.core.policy import Trusted
        from packager.instance.trust import resolve_policy

        policy = resolve_policy(
            home=ctx.home,
            trust_file=ctx.trust_file,
            key_paths=key_paths,
            refusing="nothing to verify the signature with",
            keys_only=True,
        )
        return Trusted(policy)

    manifest, statement = verify_bundle_signer(bundle, mode=mode)
    from packager.cli import render, render_build

    revoked = None
    if key_paths:
        from packager.instance.trust import revoked_in_policy

        revoked = revoked_in_policy(statement.signer, home=ctx.home, trust_file=ctx.trust_file)
    if revoked is not None:
        render.warn(render_build.revoked_key_warning(*revoked))
    verified = render_build.Verified(manifest, statement, revoked_in_policy=revoked is not None)
    render.show(ctx, render_build.VERIFIED, verified, as_json=as_json)


COMMANDS = (verify,)
