"""The models a server answers for, each with its ``current`` version loaded.

A request takes the :class:`Loaded` entry of its model once and keeps it to the end:
when ``current`` moves (install, update, rollback), :meth:`Served.refresh` loads the new
version beside the old and swaps the entry; requests in flight finish on the old session,
which is freed when the last of them lets go of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from packager.core.text import printable
from packager.errors import NotFoundError, NotInstalledError, PackagerError
from packager.instance.store import Store
from packager.runtime import Model

# Versions asked for by number that stay loaded beside the current ones, per model.
MAX_PINNED = 4
# How much of a model name or version from a request's URL an error message repeats.
ECHOED = 100


class Cost:
    """The CPU time of a model version's last answer, in seconds per row of its input: the
    server runs the next one on its event loop when that times its rows is small."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


@dataclass(frozen=True)
class Loaded:
    """One model version, ready to answer."""

    name: str
    version: str
    model: Model
    cost: Cost = field(default_factory=Cost, compare=False, repr=False)


class Refreshed(NamedTuple):
    """What a :meth:`Served.refresh` changed: the versions loaded, the models no longer
    served (uninstalled), and the first error met (the rest was looked at)."""

    switched: list[Loaded]
    dropped: list[str]
    error: Exception | None


class Served:
    """The served models: by name (their current version) and by name and version."""

    def __init__(
        self,
        store: Store,
        names: Sequence[str],
        *,
        threads: int = 0,
        warn: Callable[[str], None] = lambda _message: None,
    ) -> None:
        """Load the current version of each of ``names`` (every installed model if empty).

        Raises:
            NotFoundError: a model is not installed, or there is none to serve.
            PackagerError: a model cannot be loaded (see :meth:`Model.open`).
        """
        self._store = store
        self._threads = threads
        self._warn = warn
        self._follow_all = not names
        self._asked = set(names)
        self._current: dict[str, Loaded] = {}
        self._pinned: dict[tuple[str, str], Loaded] = {}
        # A version that failed to load is not tried again on every poll.
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # loads of versions that are not current
        wanted = list(names) or sorted({i.name for i in store.installed() if i.current})
        if not wanted:
            raise NotFoundError("no model is installed; run `packager install NAME` first")
        for name in wanted:
            self._current[name] = self._load(name, None)

    @property
    def home(self) -> Path:
        """The instance's home (``$PACKAGER_HOME``)."""
        return self._store.home

    @property
    def names(self) -> list[str]:
        return sorted(self._current)

    def loaded(self) -> list[Loaded]:
        """The current version of every served model."""
        return [self._current[name] for name in self.names]

    def current(self, name: str) -> Loaded:
        """The current version of ``name``.

        Raises:
            NotFoundError: ``name`` is not served.
        """
        loaded = self._current.get(name)
        if loaded is None:
            raise NotFoundError(f"model {printable(name, ECHOED)!r} is not served here")
        return loaded

    def cached(self, name: str, version: str | None) -> Loaded | None:
        """``name`` at ``version`` if it is loaded (current, or kept from an earlier
        request), else None.

        Raises:
            NotFoundError: the model is not served.
        """
        loaded = self.current(name)
        if version is None or version == loaded.version:
            return loaded
        return self._pinned.get((name, version))

    def get(self, name: str, version: str | None) -> Loaded:
        """``name`` at ``version`` (its current version when None), loading it if need be:
        one load at a time, so requests naming versions at once load each once, and
        without the lock a switch of ``current`` (:meth:`refresh`) takes.

        Raises:
            NotFoundError: the model is not served or the version is not installed.
            PackagerError: the version cannot be loaded.
        """
        found = self.cached(name, version)
        if found is not None:
            return found
        assert version is not None
        with self._loading:
            pinned = self._pinned.get((name, version))
            if pinned is not None:  # loaded while this request waited
                return pinned
            try:
                pinned = self._load(name, version)
            except NotInstalledError:
                # The store's message names the version twice, and it comes from a URL.
                shown = printable(version, ECHOED)
                raise NotInstalledError(f"{name}@{shown} is not installed here") from None
            with self._lock:
                ours = [key for key in self._pinned if key[0] == name]
                if len(ours) >= MAX_PINNED:
                    del self._pinned[ours[0]]
                self._pinned[(name, version)] = pinned
        return pinned

    def versions(self, name: str) -> list[str]:
        """The installed versions of a served model."""
        self.current(name)
        return self._store.versions(name)

    def refresh(self, again: bool = False) -> Refreshed:
        """Load the new current version of every model whose ``current`` moved (and, when
        serving every model, the models installed since), and stop serving those that were
        uninstalled (a model asked for by name comes back when it is installed again);
        returns what was loaded and dropped, and the first error met reading the store or
        a model's files (the disk, too many open files), which leaves what it touched as it
        was until the next refresh.

        A version that cannot be loaded (its graph refused) is reported through ``warn``
        once, and the version before it goes on answering; it is not tried again unless
        ``again``.
        """
        switched: list[Loaded] = []
        dropped: list[str] = []
        error: Exception | None = None
        with self._lock:
            if again:
                self._failed.clear()
            names = set(self._current) | self._asked
            try:
                found = self._store.installed()
                if self._follow_all:
                    names |= {i.name for i in found if i.current}
                installed = {(i.name, i.version) for i in found}
            except (OSError, PackagerError) as e:
                error, installed = e, None
            held = None if installed is None else {name for name, _ in installed}
            for name in sorted(names):
                if held is not None and name not in held:  # uninstalled
                    if self._current.pop(name, None) is not None:
                        dropped.append(name)
                    continue
                try:
                    loaded = self._refresh(name)
                except (OSError, PackagerError) as e:
                    error = error or e
                    continue
                if loaded is not None:
                    switched.append(loaded)
            if installed is not None:
                for key in [k for k in self._pinned if k not in installed]:
                    del self._pinned[key]
        return Refreshed(switched, dropped, error)

    def _refresh(self, name: str) -> Loaded | None:
        version = self._store.current_version(name)
        before = self._current.get(name)
        if version is None or (before is not None and before.version == version):
            return None
        if self._failed.get(name) == version:
            return None
        try:
            loaded = self._load(name, version)
        except PackagerError as e:
            if isinstance(e.__cause__, OSError):
                raise  # its files could not be read (too many open files): tried again
            self._failed[name] = version
            self._warn(f"{name}@{version} cannot be served, still serving the version before: {e}")
            return None
        self._current[name] = loaded
        return loaded

    def _load(self, name: str, version: str | None) -> Loaded:
        directory = self._store.installed_dir(name, version)
        return Loaded(name, directory.name, Model.open(directory, threads=self._threads))
