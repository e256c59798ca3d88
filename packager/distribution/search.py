"""What a registry holds: its models and their versions (``packager search``)."""

from __future__ import annotations

from packager.core.root import TRUST_REPOSITORY
from packager.errors import NotFoundError
from packager.registry.base import RegistryReader
from packager.registry.layout import LayoutRegistry


def catalog(registry: RegistryReader, name: str | None = None) -> dict[str, list[str]]:
    """Every model of ``registry`` (or only ``name``) with its versions, lowest first.

    A registry that exists but holds no model gives an empty catalog.

    Raises:
        UsageError: ``name`` is not a valid model name.
        NotFoundError: ``name`` has no version there, or the registry directory does
            not exist.
        RegistryError: the registry cannot be read.
    """
    if name is not None:
        versions = registry.versions(name)
        if not versions:
            raise NotFoundError(
                f"model {name!r} not found in {registry.location}; "
                f"`packager search --registry {registry.location}` lists what it holds"
            )
        return {name: versions}
    # The root of trust's repository holds documents, not models.
    names = [n for n in registry.names() if n != TRUST_REPOSITORY]
    if not names and isinstance(registry, LayoutRegistry) and not registry.root.is_dir():
        raise NotFoundError(
            f"no registry at {registry.location}; give the registry with --registry REF, "
            "or publish a bundle there first with `packager publish BUNDLE`"
        )
    return {n: registry.versions(n) for n in names}
