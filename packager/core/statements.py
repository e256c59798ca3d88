"""Signed documents about one model version: one reader and one writer for all (pure).

Approvals, their revocations and benchmark results are in-toto Statements v1: one
subject, ``NAME@VERSION`` with the sha256 of that version's signed manifest.json, and a
predicate that repeats the name (``model``) and the version. A channel document is a
flat document of packager's own saying the same of one version: ``_type``, ``name``,
``version`` and ``manifestDigest`` beside its other fields.

:func:`parse_statement` reads either kind as a :class:`Form` describes it: the type,
exactly the fields the form allows (required and optional), a valid model name and
version, the subject bound to them, and the manifest digest. It returns a
:class:`VersionStatement` whose accessors check each remaining field. Every refusal is a
TamperedError that starts with the kind of document (``approval: bad role``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from packager.core.digests import Digest
from packager.core.jsonio import loads
from packager.core.manifest import NAME_RE, is_version
from packager.core.signature import STATEMENT_TYPE
from packager.errors import TamperedError

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_STATEMENT_KEYS = frozenset({"_type", "subject", "predicateType", "predicate"})


@dataclass(frozen=True)
class Form:
    """One kind of document: ``what`` it is called in messages, its ``type`` (the
    predicateType of a statement, the ``_type`` of a ``flat`` document), and the keys
    its predicate (a flat document, ``_type`` aside) must and may have."""

    what: str
    type: str
    required: frozenset[str]
    optional: frozenset[str] = frozenset()
    flat: bool = False

    @classmethod
    def statement(
        cls, what: str, predicate_type: str, fields: set[str], optional: set[str] | None = None
    ) -> Form:
        """An in-toto Statement v1 whose predicate holds ``model``, ``version``, ``fields``
        and possibly ``optional``."""
        return cls(
            what,
            predicate_type,
            frozenset({"model", "version", *fields}),
            frozenset(optional or ()),
        )

    @classmethod
    def document(cls, what: str, document_type: str, fields: set[str]) -> Form:
        """A flat document: ``_type``, ``name``, ``version``, ``manifestDigest`` and
        ``fields``, nothing else."""
        return cls(
            what,
            document_type,
            frozenset({"name", "version", "manifestDigest", *fields}),
            flat=True,
        )

    def tampered(self, problem: str) -> TamperedError:
        return TamperedError(f"{self.what}: {problem}")


@dataclass(frozen=True)
class Subject:
    """What a signed document beside a version is about: ``name``@``version`` whose
    signed manifest.json has ``manifest_digest``."""

    name: str
    version: str
    manifest_digest: Digest

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def mismatch(self, said: Subject) -> str | None:
        """Why a document that ``said`` it is about that version is not about this one
        (``is for ...``); None when it is."""
        if (said.name, said.version) != (self.name, self.version):
            return f"is for {said.ref}, not {self.ref}"
        if said.manifest_digest != self.manifest_digest:
            return (
                f"is for manifest.json {said.manifest_digest}, "
                f"not the signed {self.manifest_digest} of {self.ref}"
            )
        return None


@dataclass(frozen=True)
class VersionStatement:
    """What a document says of ``name``@``version`` (whose manifest.json has
    ``manifest_digest``): its other ``fields``, read through the checking accessors."""

    form: Form
    name: str
    version: str
    manifest_digest: Digest
    fields: Mapping[str, Any]

    def has(self, key: str) -> bool:
        return key in self.fields

    def _value(self, key: str) -> Any:
        """The field ``key``; a document without it is refused, never a KeyError."""
        if key not in self.fields:
            raise self.form.tampered(f"no {key}")
        return self.fields[key]

    def text(
        self,
        key: str,
        *,
        problem: str,
        pattern: re.Pattern[str] | None = None,
        max_chars: int | None = None,
    ) -> str:
        """A string field, matching ``pattern`` and at most ``max_chars`` long when given.

        Raises:
            TamperedError: ``problem``, when it is not.
        """
        value = self._value(key)
        if (
            not isinstance(value, str)
            or (pattern is not None and not pattern.fullmatch(value))
            or (max_chars is not None and len(value) > max_chars)
        ):
            raise self.form.tampered(problem)
        return value

    def time(self, key: str) -> datetime:
        """A time field (``2026-12-02T13:00:00Z``), in UTC.

        Raises:
            TamperedError: not a string, or not such a time.
        """
        value = self._value(key)
        if not isinstance(value, str):
            raise self.form.tampered(f"{key} is not a timestamp")
        try:
            moment = datetime.strptime(value, TIME_FORMAT)
        except ValueError as e:
            raise self.form.tampered(f"{key} {value[:40]!r} is malformed") from e
        return moment.replace(tzinfo=UTC)

    def times(self, issued: str, expires: str) -> tuple[datetime, datetime]:
        """Two time fields, the second after the first.

        Raises:
            TamperedError: either is malformed, or ``expires`` is not after ``issued``.
        """
        start, end = self.time(issued), self.time(expires)
        if end <= start:
            raise self.form.tampered(f"{expires} before it was {issued}")
        return start, end

    def integer(self, key: str, *, minimum: int, problem: str) -> int:
        """An integer field (booleans are not), at least ``minimum``.

        Raises:
            TamperedError: ``problem``, when it is not.
        """
        value = self._value(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.form.tampered(problem)
        return value

    def digest(self, key: str, *, problem: str) -> Digest:
        """A ``sha256:<hex>`` field.

        Raises:
            TamperedError: ``problem`` when it is not a string; a malformed digest.
        """
        return Digest.parse(self.text(key, problem=problem))

    def mapping(self, key: str, *, problem: str) -> Mapping[str, Any]:
        """A JSON object field.

        Raises:
            TamperedError: ``problem``, when it is not one.
        """
        value = self._value(key)
        if not isinstance(value, dict):
            raise self.form.tampered(problem)
        return value


def parse_statement(payload: bytes, form: Form) -> VersionStatement:
    """Read ``payload`` as a document of ``form`` (its signature already checked, or for
    display only).

    Raises:
        TamperedError: not acceptable JSON, another type, other fields than the form's,
            a bad model name or version, a subject that does not name them, or a
            malformed digest.
    """
    doc = loads(payload, what=form.what)
    fields, subject, digest = _flat(doc, form) if form.flat else _in_toto(doc, form)
    name_key = "name" if form.flat else "model"
    name, version = fields[name_key], fields["version"]
    if not (isinstance(name, str) and NAME_RE.fullmatch(name)):
        raise form.tampered("bad model name")
    if not (isinstance(version, str) and is_version(version)):
        raise form.tampered("bad version")
    if not form.flat and subject != f"{name}@{version}":
        raise form.tampered(f"the subject does not name {name}@{version}")
    rest = {k: v for k, v in fields.items() if k not in (name_key, "version", "manifestDigest")}
    return VersionStatement(form, name, version, digest, rest)


def _in_toto(doc: object, form: Form) -> tuple[Mapping[str, Any], str, Digest]:
    """(predicate, subject name, subject digest) of an in-toto Statement v1 of
    ``form``: one subject, a name and a sha256 digest only."""
    if not isinstance(doc, dict) or set(doc) != _STATEMENT_KEYS or doc["_type"] != STATEMENT_TYPE:
        raise form.tampered("not an in-toto Statement v1")
    if doc["predicateType"] != form.type:
        raise form.tampered(
            f"predicateType is {str(doc['predicateType'])[:80]!r}, not {form.type!r}"
        )
    subjects, predicate = doc["subject"], doc["predicate"]
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise form.tampered("the statement must have exactly one subject")
    subject = subjects[0]
    digests = subject.get("digest")
    if (
        set(subject) != {"name", "digest"}
        or not isinstance(subject["name"], str)
        or not isinstance(digests, dict)
        or set(digests) != {"sha256"}
        or not isinstance(digests["sha256"], str)
    ):
        raise form.tampered("the subject must be a name and a sha256 digest")
    if not isinstance(predicate, dict) or not _allowed(set(predicate), form):
        raise form.tampered("unexpected predicate fields")
    return predicate, subject["name"], Digest(digests["sha256"])


def _flat(doc: object, form: Form) -> tuple[Mapping[str, Any], None, Digest]:
    """(fields, no subject, ``manifestDigest``) of a flat document of ``form``, its
    ``_type`` checked and left out."""
    if (
        not isinstance(doc, dict)
        or doc.get("_type") != form.type
        or not _allowed(set(doc) - {"_type"}, form)
    ):
        raise form.tampered("unexpected fields or type")
    digest = doc["manifestDigest"]
    if not isinstance(digest, str):
        raise form.tampered("bad manifestDigest")
    return {k: v for k, v in doc.items() if k != "_type"}, None, Digest.parse(digest)


def _allowed(keys: set[str], form: Form) -> bool:
    return form.required <= keys <= form.required | form.optional


def statement_payload(
    name: str, version: str, digest: Digest, predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """The canonical in-toto Statement v1 about ``name``@``version`` (manifest.json
    ``digest``) that is signed: the predicate is given ``model`` and ``version``."""
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{name}@{version}", "digest": {"sha256": digest.hex}}],
        "predicateType": predicate_type,
        "predicate": {**predicate, "model": name, "version": version},
    }
    return document_bytes(doc)


def document_bytes(doc: Mapping[str, Any]) -> bytes:
    """The one canonical form of every document here that is signed: JSON, keys
    sorted, no spaces, UTF-8. (Every field of a channel document is ASCII, so its
    bytes are the same as when non-ASCII characters were escaped.)"""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def timestamp(moment: datetime) -> str:
    """``moment`` as the documents write times: UTC, to the second."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)
