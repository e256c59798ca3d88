"""SemVer 2.0.0 precedence (§11)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packager.core.semver import is_semver, max_version, semver_key, sort_versions
from packager.errors import UsageError

# The chain §11.4 gives as its example, lowest first.
SPEC_CHAIN = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]


def test_spec_example_chain_is_ascending() -> None:
    keys = [semver_key(v) for v in SPEC_CHAIN]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


def test_sort_shuffled_spec_chain() -> None:
    assert sort_versions(reversed(SPEC_CHAIN)) == SPEC_CHAIN


def test_numeric_parts_compare_as_numbers() -> None:
    assert sort_versions(["1.10.0", "1.9.0", "1.2.0", "10.0.0", "2.0.0"]) == [
        "1.2.0",
        "1.9.0",
        "1.10.0",
        "2.0.0",
        "10.0.0",
    ]
    assert semver_key("1.0.10") > semver_key("1.0.9")


def test_prerelease_is_lower_than_release() -> None:
    assert semver_key("1.0.0-rc.1") < semver_key("1.0.0")
    assert semver_key("1.0.0") < semver_key("1.0.1-alpha")


def test_numeric_identifiers_are_lower_than_alphanumeric() -> None:
    assert semver_key("1.0.0-999") < semver_key("1.0.0-a")
    assert semver_key("1.0.0-2") < semver_key("1.0.0-10")
    # ASCII order: uppercase and '-' sort before lowercase.
    assert semver_key("1.0.0-Z") < semver_key("1.0.0-a")
    assert semver_key("1.0.0--") < semver_key("1.0.0-a")


def test_build_metadata_is_ignored() -> None:
    assert semver_key("1.0.0+build.1") == semver_key("1.0.0+build.2") == semver_key("1.0.0")
    assert semver_key("1.0.0-rc.1+x") == semver_key("1.0.0-rc.1")
    # Equal precedence still sorts deterministically, by text.
    assert sort_versions(["1.0.0+b", "1.0.0+a", "1.0.0"]) == ["1.0.0", "1.0.0+a", "1.0.0+b"]


def test_max_version() -> None:
    assert max_version(["1.9.0", "1.10.0", "1.10.0-rc.1"]) == "1.10.0"
    assert max_version(["1.0.0-rc.1", "0.9.0"]) == "1.0.0-rc.1"
    assert max_version([]) is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1",
        "1.0",
        "v1.0.0",
        "01.0.0",
        "1.0.0-01",
        "1.0.0-",
        "1.0.0+",
        "1.0.0-a..b",
        "1.0.0\n",
        " 1.0.0",
        "1.0.0-1\u0661",  # an Arabic-Indic digit: \d would accept it
        "latest",
    ],
)
def test_invalid_versions_are_refused(bad: str) -> None:
    assert not is_semver(bad)
    with pytest.raises(UsageError, match="Semantic Versioning"):
        semver_key(bad)
    with pytest.raises(UsageError):
        max_version(["1.0.0", bad])


numbers = st.integers(min_value=0, max_value=10**6)


@given(a=st.tuples(numbers, numbers, numbers), b=st.tuples(numbers, numbers, numbers))
def test_release_order_matches_numeric_tuples(
    a: tuple[int, int, int], b: tuple[int, int, int]
) -> None:
    va, vb = ".".join(map(str, a)), ".".join(map(str, b))
    assert (semver_key(va) < semver_key(vb)) == (a < b)
    assert (semver_key(va) == semver_key(vb)) == (a == b)


identifier = st.one_of(
    numbers.map(str), st.from_regex(r"[a-zA-Z-][0-9a-zA-Z-]{0,5}", fullmatch=True)
)


@given(pre=st.lists(identifier, min_size=1, max_size=4), extra=identifier)
def test_longer_prerelease_with_same_prefix_is_higher(pre: list[str], extra: str) -> None:
    shorter = "1.0.0-" + ".".join(pre)
    longer = shorter + "." + extra
    assert semver_key(shorter) < semver_key(longer) < semver_key("1.0.0")
