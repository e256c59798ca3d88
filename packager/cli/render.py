"""All output of the commands: each result has one JSON rendering (``--json``, on stdout)
and one text rendering (results on stdout, notes on stderr unless ``--quiet``).

This module holds what every command uses (and failures); each side's results are
rendered in its own module (render_build, render_distribution, render_instance,
render_trust), so that a command imports only what it shows.

Only modules needed to print are imported here; result types are for annotations.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import click

from packager.cli.options import Context
from packager.core.text import printable

T = TypeVar("T")


@dataclass(frozen=True)
class Rendering(Generic[T]):
    """How one kind of result is shown: as JSON data, or as text through the context."""

    json: Callable[[T], Any]
    text: Callable[[Context, T], None]


def show(ctx: Context, rendering: Rendering[T], result: T, *, as_json: bool) -> None:
    if as_json:
        emit(rendering.json(result))
        ctx.json_written = True
    else:
        rendering.text(ctx, result)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def line(text: str, *, err: bool = False) -> None:
    """Print one line of text output: what it quotes from registries, bundles or the audit
    log is shown as data (escaped), never as terminal control or a line break."""
    click.echo(printable(text, limit=None), err=err)


def line_err(text: str) -> None:
    """One line on stderr, even with --quiet (a server's events)."""
    line(f"packager: {text}", err=True)


def warn(message: str) -> None:
    """A warning the user must see: on stderr even with --quiet."""
    line(f"packager: WARNING: {message}", err=True)


def failure(ctx: Context, message: str, exit_code: int) -> int:
    """Report a failure: one line on stderr, and with ``--json`` an object on stdout;
    returns ``exit_code``. Messages quote what registries sent: shown as data, never as
    terminal control."""
    text = printable(message, limit=None)
    click.echo(f"packager: error: {text}", err=True)
    # A command that printed its JSON result and then failed (mirror's conflicts) has
    # said it all on stdout already: one JSON document there, never two.
    if ctx.json_errors and not ctx.json_written:
        emit({"error": text, "exitCode": exit_code})
    return exit_code
