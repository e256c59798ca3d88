"""The ``packager`` command line: each command parses, calls one library function, prints.

Errors are caught in exactly one place, :func:`main`, and become a one-line
message on stderr (and a JSON object on stdout with ``--json``) and the exit code
documented in the README.
"""

from __future__ import annotations

import importlib
import os
import select
import sys
from typing import Any, NoReturn

import click

from packager._io.process import fill_closed_standard_streams, leave
from packager._version import __version__
from packager.cli.options import Context, add_global_options
from packager.errors import DISK_ERRNOS, LocalDiskError, PackagerError

# What a shell reports for a process its closed pipe stopped (128 + SIGPIPE).
CLOSED_PIPE = 141

# The module (under packager.cli) defining each command, in its COMMANDS: a command
# imports its own module only, so `packager list` does not pay for `package`'s imports.
COMMAND_MODULES = {
    **dict.fromkeys(("keygen", "package", "sign", "inspect", "benchmark"), "build"),
    "verify": "verify",
    **dict.fromkeys(
        (
            "publish",
            "search",
            "pull",
            "promote",
            "approve",
            "revoke-approval",
            "export",
            "gc",
            "mirror",
            "root",
            "delegate",
        ),
        "distribution",
    ),
    **dict.fromkeys(
        (
            "install",
            "update",
            "list",
            "rollback",
            "remove",
            "uninstall",
            "prune",
            "pin",
            "unpin",
            "predict",
            "serve",
            "log",
            "status",
            "trust",
        ),
        "instance",
    ),
}


class _OutputClosed(Exception):
    """Whoever read stdout went away (``packager log | head -1``)."""


class LazyGroup(click.Group):
    """The command group: each command is imported when it is looked up (and given the
    global options then); a closed stdout ends the command quietly."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        commands: tuple[click.Command, ...] = importlib.import_module(
            f"packager.cli.{module}"
        ).COMMANDS
        command = next(c for c in commands if c.name == cmd_name)
        if command not in _GLOBALS_ADDED:
            add_global_options(command)
            _GLOBALS_ADDED.add(command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:
            # Raised as our own: click would turn it into exit 1.
            if _stdout_closed():
                raise _OutputClosed from e
            raise


# The commands that have been given the global options (once each).
_GLOBALS_ADDED: set[click.Command] = set()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="packager")
def cli() -> None:
    """Package trained models as signed ONNX bundles, publish, verify, install and run them.

    --home, -q and --trust may come before or after the command.

    Exit codes: 0 ok, 1 unexpected error, 2 usage (also: not installed here, or the local
    disk refused: read-only, full, permission denied), 3 verification or trust failure,
    4 registry failure, 5 model incompatible or smoke test failed, 6 benchmark gate failed,
    130 interrupted.
    """


add_global_options(cli)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning packager errors into messages and exit codes."""
    ctx = Context()
    try:
        cli.main(args=argv, prog_name="packager", standalone_mode=False, obj=ctx)
    except PackagerError as e:
        # A value refused while the line was parsed: --json's callback may not have run.
        ctx.json_errors |= "--json" in (sys.argv[1:] if argv is None else argv)
        return _failure(ctx, str(e), e.exit_code)
    except OSError as e:
        # The disk refused a write or read: not a bug, not a registry's failure.
        if e.errno not in DISK_ERRNOS:
            raise
        return _failure(ctx, _disk_message(e), LocalDiskError.exit_code)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):
            return _failure(ctx, "interrupted", 130)
        return _failure(ctx, "aborted", 1)
    except click.ClickException as e:
        code = 2 if isinstance(e, click.UsageError) else e.exit_code
        # A line click could not parse never reached --json's callback.
        ctx.json_errors |= "--json" in (sys.argv[1:] if argv is None else argv)
        if ctx.json_errors:
            _failure(ctx, e.format_message(), code)
        else:
            e.show()
        return code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except KeyboardInterrupt:
        return _failure(ctx, "interrupted", 130)
    except _OutputClosed:
        # Later writes (the interpreter's last flush) go nowhere instead of failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE
    return 0


def _failure(ctx: Context, message: str, exit_code: int) -> int:
    # Imported here: a command that succeeds may not print at all (`packager --help`), or
    # prints once the work is under way (`packager verify`, once the files hash).
    from packager.cli import render

    return render.failure(ctx, message, exit_code)


def _disk_message(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return (
        f"local disk: {where}{e.strerror}; free space, or give a --home (or file) this "
        "account may write"
    )


def _stdout_closed() -> bool:
    """Whether stdout is a pipe nobody reads any more."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (OSError, ValueError, AttributeError):  # not a file descriptor (captured)
        return False
    return any(events & select.POLLERR for _, events in poller.poll(0))


def run() -> NoReturn:
    """The console script: :func:`main` on the process's own command line, then the end
    of the process (:func:`packager._io.process.leave`). A standard stream closed when
    the process started is /dev/null before anything else is opened."""
    fill_closed_standard_streams()
    leave(main())
