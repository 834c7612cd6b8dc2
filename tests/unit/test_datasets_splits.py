"""Seeded splits and dataset references: fractions checked, sizes that add up, rows assigned
deterministically from (seed, fractions, row count), and nothing shared between splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.datasets.refs import DatasetRef, check_format, check_name, check_path, check_version
from stratus.datasets.splits import (
    check_fractions,
    check_seed,
    describe,
    parse_split,
    split_indices,
    split_sizes,
)
from stratus.errors import BadRequest


# -- fractions --------------------------------------------------------------------------
def test_parse_split_reads_names_and_fractions() -> None:
    assert parse_split("train=0.8,test=0.2") == {"train": 0.8, "test": 0.2}
    assert parse_split(" train = 0.7 , valid=0.1,test=0.2 ") == {"train": 0.7, "valid": 0.1,
                                                                 "test": 0.2}
    assert parse_split("all=1") == {"all": 1.0}


@pytest.mark.parametrize(("text", "message"), [
    ("train=0.8,test=0.1", "sum to 0.9, not 1"),
    ("train=0.8,test=0.3", "sum to 1.1, not 1"),
    ("train=1.2,test=-0.2", "must be positive"),
    ("train=1,test=0", "must be positive"),
    ("train=nan", "must be positive"),
    ("train=0.8,test", "NAME=FRACTION"),
    ("=0.8,test=0.2", "NAME=FRACTION"),
    ("train=abc", "is not a number"),
    ("train=0.5,train=0.5", "twice"),
    ("1st=0.5,test=0.5", "must be an identifier"),
    ("tr-ain=0.5,test=0.5", "must be an identifier"),
    ("trän=0.5,test=0.5", "must be an identifier"),
])
def test_bad_splits_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_split(text)


def test_fractions_within_a_millionth_of_one_pass() -> None:
    assert check_fractions({"a": 0.3333333, "b": 0.3333333, "c": 0.3333333})
    with pytest.raises(BadRequest, match="sum to"):
        check_fractions({"a": 0.333333, "b": 0.333333, "c": 0.333333})
    with pytest.raises(BadRequest, match="at least one"):
        check_fractions({})
    with pytest.raises(BadRequest, match="not a number"):
        check_fractions({"a": True})


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_seeds_are_non_negative_63_bit_integers(seed: object) -> None:
    with pytest.raises(BadRequest, match="seed"):
        check_seed(seed)  # type: ignore[arg-type]


# -- sizes and rows ---------------------------------------------------------------------
def test_sizes_follow_the_fractions_and_add_up() -> None:
    assert split_sizes(150, {"train": 0.8, "test": 0.2}) == {"test": 30, "train": 120}
    assert split_sizes(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {"a": 4, "b": 3, "c": 3}
    assert split_sizes(3, {"train": 0.8, "test": 0.2}) == {"test": 1, "train": 2}
    assert split_sizes(0, {"train": 0.8, "test": 0.2}) == {"test": 0, "train": 0}


fractions_strategy = st.lists(st.integers(1, 100), min_size=1, max_size=6).map(
    lambda weights: {f"s{i}": w / sum(weights) for i, w in enumerate(weights)})


@given(rows=st.integers(0, 5000), fractions=fractions_strategy)
def test_sizes_always_sum_to_the_rows_and_stay_within_one_of_exact(
        rows: int, fractions: dict[str, float]) -> None:
    sizes = split_sizes(rows, fractions)
    assert sum(sizes.values()) == rows
    for name, size in sizes.items():
        assert abs(size - rows * fractions[name]) < 1 + 1e-9


@given(rows=st.integers(0, 2000), seed=st.integers(0, 2**63 - 1), fractions=fractions_strategy)
def test_splits_partition_the_rows(rows: int, seed: int, fractions: dict[str, float]) -> None:
    parts = {name: split_indices(rows, seed, fractions, name) for name in fractions}
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(rows)), "every row in exactly one split"
    for name, rows_of_split in parts.items():
        assert len(rows_of_split) == split_sizes(rows, fractions)[name]
        assert np.all(np.diff(rows_of_split) > 0), "each split keeps the file's order"


def test_the_same_seed_gives_the_same_rows_and_another_seed_others() -> None:
    fractions = {"train": 0.8, "test": 0.2}
    first = split_indices(1000, 42, fractions, "test")
    assert np.array_equal(first, split_indices(1000, 42, fractions, "test"))
    assert np.array_equal(first, split_indices(1000, 42, {"test": 0.2, "train": 0.8}, "test")), \
        "the order the fractions are given in does not matter"
    assert not np.array_equal(first, split_indices(1000, 43, fractions, "test"))
    # Pinned: a change to the assignment would move every recorded split's rows.
    assert split_indices(10, 0, fractions, "test").tolist() == \
        sorted(np.random.Generator(np.random.PCG64(0)).permutation(10)[:2].tolist())


def test_an_unknown_split_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        split_indices(10, 0, {"train": 1.0}, "test")


def test_describe_records_seed_fractions_and_sizes() -> None:
    assert describe(150, 3, {"train": 0.8, "test": 0.2}) == {
        "seed": 3, "fractions": {"train": 0.8, "test": 0.2}, "sizes": {"test": 30, "train": 120}}


# -- names, versions, references ----------------------------------------------------------
def test_references_name_a_version_or_the_latest() -> None:
    assert DatasetRef.parse("iris@1") == DatasetRef("iris", "1")
    assert DatasetRef.parse("iris") == DatasetRef("iris")
    assert str(DatasetRef.parse("sales-2024@2024-06.v2")) == "sales-2024@2024-06.v2"
    for bad in ("Iris@1", "iris@", "iris@1@2", "@1", "iris@-1", "ir is", "iris@1/2"):
        with pytest.raises(BadRequest):
            DatasetRef.parse(bad)


def test_names_versions_formats_and_paths_are_checked() -> None:
    assert check_name("iris-2") == "iris-2"
    assert check_version("1.0.0") == "1.0.0"
    assert check_format("parquet") == "parquet"
    assert check_path("part/0001.csv") == "part/0001.csv"
    for call, value in ((check_name, "-iris"), (check_name, "a" * 64), (check_version, "v" * 64),
                        (check_format, "json"), (check_path, "../x.csv"), (check_path, "/x.csv"),
                        (check_path, ".hidden.csv"), (check_path, "")):
        with pytest.raises(BadRequest):
            call(value)
