"""Text and JSON rendering of command results."""

from __future__ import annotations

import json
from typing import Any

import click


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
