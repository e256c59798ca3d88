"""How close a signed document is to its expiry: what `list` and `update` warn about.

Pure and free of heavy imports, as `packager list` reads it at every start.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# A followed channel whose document expires within this is warned about by `list` and
# `update`, so that the publisher can promote again before instances refuse it.
EXPIRY_WARNING = timedelta(days=7)


def days_left(expires: datetime, now: datetime) -> int:
    """Whole days until ``expires`` (negative: whole days since; 0 within the last day)."""
    left = expires - now
    return left.days if left >= timedelta(0) else -((-left).days)


def expiry_note(expires: datetime, now: datetime) -> str:
    """``expires in N days`` or ``expired N days ago``, as `list` and `update` show it."""
    days = days_left(expires, now)
    if expires <= now:
        return f"expired {_days(-days)} ago" if days else "expired today"
    return f"expires in {_days(days)}" if days else "expires within a day"


def expires_soon(expires: datetime, now: datetime) -> bool:
    """Whether to warn: the document expires within :data:`EXPIRY_WARNING` (or has)."""
    return expires - now <= EXPIRY_WARNING


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"
