"""The ``packager`` command line: each command parses, calls one library function, prints.

Errors are caught in exactly one place, :func:`main`, and become a one-line
message on stderr and the exit code documented in the README.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from packager._io.config import resolve_home
from packager._version import __version__
from packager.cli import build, distribution, instance
from packager.cli.options import Context
from packager.core.text import printable
from packager.errors import PackagerError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="packager")
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="PACKAGER_HOME",
    help="State directory (default ~/.local/share/packager; env PACKAGER_HOME).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
@click.pass_context
def cli(click_ctx: click.Context, home: Path | None, quiet: bool) -> None:
    """Package trained models as signed ONNX bundles, publish, verify, install and run them.

    Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 verification or trust
    failure, 4 registry failure, 5 model incompatible or smoke test failed,
    6 benchmark gate failed.
    """
    click_ctx.obj = Context(resolve_home(home), quiet)


for _command in (*build.COMMANDS, *distribution.COMMANDS, *instance.COMMANDS):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning packager errors into messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="packager", standalone_mode=False)
    except PackagerError as e:
        # Messages quote what registries sent: shown as data, never as terminal control.
        click.echo(f"packager: error: {printable(str(e), limit=None)}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("packager: aborted", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return 2 if isinstance(e, click.UsageError) else e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except KeyboardInterrupt:
        click.echo("packager: interrupted", err=True)
        return 130
    return 0


def run() -> None:
    sys.exit(main())
