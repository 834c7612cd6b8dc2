"""The model registry's rules: semantic versions, references, stages and how a reference
resolves; plus the stage bookkeeping of the store (on SQLite) that those rules rely on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus.errors import BadRequest, Conflict, NotFound
from stratus.models.registry import (
    EXCLUSIVE_STAGES,
    STAGES,
    ModelRef,
    check_name,
    check_stage,
    parse_version,
)
from stratus.store.db import make_engine, migrate, sqlite_url
from stratus.store.models import ModelStore, ModelVersionRecord

T0 = datetime(2025, 1, 1, 12, 0, 0)
FILES = {"model.safetensors": {"sha256": "ab" * 32, "size": 10}}


def record(version: str, stage: str = "dev", promoted: int = 0, name: str = "m") -> ModelVersionRecord:
    return ModelVersionRecord(
        namespace="default", name=name, version=version, stage=stage,
        promoted_at=T0 + timedelta(seconds=promoted), format="safetensors", files=FILES,
        size_bytes=10,
    )


# -- versions, names, stages ------------------------------------------------------------
@pytest.mark.parametrize(("text", "parsed"), [
    ("0.0.0", (0, 0, 0)), ("1.2.3", (1, 2, 3)), ("10.20.30", (10, 20, 30)),
    ("1.0.12345", (1, 0, 12345)),
])
def test_parse_version_accepts_major_minor_patch(text: str, parsed: tuple[int, int, int]) -> None:
    assert parse_version(text) == parsed


@pytest.mark.parametrize("text", [
    "", "1", "1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.02.3", "1.2.03", "1.2.3-rc1", "1.2.3+build",
    " 1.2.3", "1.2.3 ", "a.b.c", "-1.2.3", "1..3",
])
def test_parse_version_refuses_anything_else(text: str) -> None:
    with pytest.raises(BadRequest, match=r"MAJOR\.MINOR\.PATCH"):
        parse_version(text)


def test_a_trailing_newline_is_not_part_of_a_valid_version_or_name() -> None:
    with pytest.raises(BadRequest):
        parse_version("1.2.3\n")
    with pytest.raises(BadRequest):
        check_name("m\n")


@given(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)))
def test_parse_version_round_trips(parts: tuple[int, int, int]) -> None:
    assert parse_version(".".join(map(str, parts))) == parts


def test_semver_orders_numerically_not_lexically() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.0")
    assert parse_version("2.0.0") > parse_version("1.99.99")


@pytest.mark.parametrize("name", ["m", "resnet-50", "a1", "x" * 63, "0abc"])
def test_check_name_accepts_dns_like_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Resnet", "res_net", "-abc", "abc-", "a" * 64, "a.b", "a b", "a/b"])
def test_check_name_refuses_others(name: str) -> None:
    with pytest.raises(BadRequest, match="lowercase"):
        check_name(name)


def test_stages() -> None:
    assert STAGES == ("dev", "staging", "production", "archived")
    assert set(EXCLUSIVE_STAGES) == {"staging", "production"}
    for stage in STAGES:
        assert check_stage(stage) == stage
    with pytest.raises(BadRequest, match="not one of dev, staging, production, archived"):
        check_stage("prod")


# -- references -------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "ref"), [
    ("m", ModelRef("m")),
    ("m@1.2.0", ModelRef("m", version="1.2.0")),
    ("m@production", ModelRef("m", stage="production")),
    ("m@staging", ModelRef("m", stage="staging")),
    ("m@dev", ModelRef("m", stage="dev")),
    ("m@archived", ModelRef("m", stage="archived")),
    ("  m@1.0.0  ", ModelRef("m", version="1.0.0")),
    ("m@", ModelRef("m")),
])
def test_ref_parse(text: str, ref: ModelRef) -> None:
    assert ModelRef.parse(text) == ref


@pytest.mark.parametrize("text", ["m", "m@1.2.0", "m@production", "bert-base@0.0.1"])
def test_ref_str_round_trips(text: str) -> None:
    assert str(ModelRef.parse(text)) == text


@pytest.mark.parametrize("text", ["m@latest", "m@1.2", "m@v1.2.0", "m@Production", "m@1.2.0@x"])
def test_ref_parse_refuses_unknown_selectors(text: str) -> None:
    with pytest.raises(BadRequest, match="after '@' comes a version"):
        ModelRef.parse(text)


@pytest.mark.parametrize("text", ["M@1.0.0", "my_model", "@production", ""])
def test_ref_parse_refuses_bad_names(text: str) -> None:
    with pytest.raises(BadRequest, match="lowercase"):
        ModelRef.parse(text)


# -- resolution -------------------------------------------------------------------------
def test_resolve_nothing_is_not_found() -> None:
    for ref in ("m", "m@1.0.0", "m@production"):
        with pytest.raises(NotFound, match="model 'm' not found"):
            ModelRef.parse(ref).resolve([])


def test_pinned_version_resolves_to_exactly_it_whatever_its_stage() -> None:
    versions = [record("1.0.0", "archived"), record("1.1.0", "production", 5), record("2.0.0")]
    assert ModelRef.parse("m@1.0.0").resolve(versions).version == "1.0.0"
    assert ModelRef.parse("m@1.1.0").resolve(versions).version == "1.1.0"
    with pytest.raises(NotFound, match=r"model 'm' has no version 1\.2\.0"):
        ModelRef.parse("m@1.2.0").resolve(versions)


def test_exclusive_stage_resolves_to_the_latest_promoted_holder() -> None:
    # The store archives the previous holder; should two ever hold the stage, the last promoted
    # wins, not the highest version (a rollback promotes an older version).
    versions = [record("1.0.0", "production", promoted=10), record("2.0.0", "production", promoted=5),
                record("3.0.0", "staging", promoted=1)]
    assert ModelRef.parse("m@production").resolve(versions).version == "1.0.0"
    assert ModelRef.parse("m@staging").resolve(versions).version == "3.0.0"


def test_non_exclusive_stage_resolves_to_its_highest_version() -> None:
    versions = [record("1.10.0", "dev", promoted=1), record("1.9.0", "dev", promoted=9),
                record("2.0.0", "production")]
    assert ModelRef.parse("m@dev").resolve(versions).version == "1.10.0"


def test_stage_without_a_holder_is_not_found() -> None:
    versions = [record("1.0.0", "dev"), record("0.9.0", "archived")]
    with pytest.raises(NotFound, match="has no version in stage production"):
        ModelRef.parse("m@production").resolve(versions)
    assert ModelRef.parse("m@archived").resolve(versions).version == "0.9.0"


def test_bare_name_is_the_newest_version_that_is_not_archived() -> None:
    versions = [record("1.9.0", "production"), record("1.10.0", "dev"), record("2.0.0", "archived")]
    assert ModelRef.parse("m").resolve(versions).version == "1.10.0"


def test_bare_name_with_only_archived_versions_is_not_found() -> None:
    with pytest.raises(NotFound, match="only archived versions"):
        ModelRef.parse("m").resolve([record("1.0.0", "archived"), record("2.0.0", "archived")])


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 12), st.integers(0, 12),
                          st.sampled_from(STAGES), st.integers(0, 1000)),
                min_size=1, max_size=12, unique_by=lambda t: t[:3]))
def test_resolution_rules_hold_for_any_set_of_versions(
        rows: list[tuple[int, int, int, str, int]]) -> None:
    versions = [record(f"{a}.{b}.{c}", stage, promoted) for a, b, c, stage, promoted in rows]
    live = [v for v in versions if v.stage != "archived"]
    if live:
        assert ModelRef.parse("m").resolve(versions) == max(live, key=lambda v: parse_version(v.version))
    else:
        with pytest.raises(NotFound):
            ModelRef.parse("m").resolve(versions)
    for stage in STAGES:
        staged = [v for v in versions if v.stage == stage]
        if not staged:
            with pytest.raises(NotFound):
                ModelRef.parse(f"m@{stage}").resolve(versions)
            continue
        chosen = ModelRef.parse(f"m@{stage}").resolve(versions)
        assert chosen.stage == stage
        if stage in EXCLUSIVE_STAGES:
            assert chosen.promoted_at == max(v.promoted_at for v in staged)
        else:
            assert parse_version(chosen.version) == max(parse_version(v.version) for v in staged)
    for version in versions:
        assert ModelRef.parse(f"m@{version.version}").resolve(versions) is version


def test_record_view_and_digests() -> None:
    rec = ModelVersionRecord(
        namespace="default", name="m", version="1.0.0", stage="dev", promoted_at=T0,
        format="safetensors", size_bytes=30,
        files={"a.safetensors": {"sha256": "aa" * 32, "size": 10},
               "b.safetensors": {"sha256": "bb" * 32, "size": 10},
               "c.safetensors": {"sha256": "aa" * 32, "size": 10}},
        meta={"framework": "pytorch", "metrics": {"acc": 0.9}},
    )
    assert rec.digests == {"aa" * 32, "bb" * 32}
    view = rec.view()
    assert view["version"] == "1.0.0" and view["framework"] == "pytorch"
    assert view["metrics"] == {"acc": 0.9} and view["created_at"] is None
    assert view["promoted_at"] == T0.isoformat()


# -- the store's stage bookkeeping -----------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[ModelStore]:
    engine = make_engine(sqlite_url(tmp_path))
    migrate(engine)
    yield ModelStore(engine, exclusive_stages=EXCLUSIVE_STAGES)
    engine.dispose()


def push(store: ModelStore, version: str, stage: str = "dev", name: str = "m",
         namespace: str = "default") -> ModelVersionRecord:
    return store.create_version(namespace, name, version, parse_version(version), "safetensors",
                                FILES, {}, stage=stage)


def _stages(store: ModelStore, name: str = "m") -> dict[str, str]:
    return {r.version: r.stage for r in store.versions("default", name)}


def test_store_promoting_into_an_exclusive_stage_archives_the_previous_holder(store: ModelStore) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        push(store, version)
    store.promote("default", "m", "1.0.0", "production")
    store.promote("default", "m", "1.1.0", "staging")
    assert _stages(store) == {"1.0.0": "production", "1.1.0": "staging", "2.0.0": "dev"}
    store.promote("default", "m", "2.0.0", "production")
    assert _stages(store) == {"1.0.0": "archived", "1.1.0": "staging", "2.0.0": "production"}
    assert ModelRef.parse("m@production").resolve(store.versions("default", "m")).version == "2.0.0"
    # Rolling back: the older version takes production again.
    store.promote("default", "m", "1.0.0", "production")
    assert _stages(store) == {"1.0.0": "production", "1.1.0": "staging", "2.0.0": "archived"}
    assert ModelRef.parse("m@production").resolve(store.versions("default", "m")).version == "1.0.0"
    # A bare name skips the archived 2.0.0.
    assert ModelRef.parse("m").resolve(store.versions("default", "m")).version == "1.1.0"


def test_store_dev_and_archived_are_not_exclusive(store: ModelStore) -> None:
    for version in ("1.0.0", "1.1.0"):
        push(store, version)
    store.promote("default", "m", "1.0.0", "archived")
    store.promote("default", "m", "1.1.0", "archived")
    assert _stages(store) == {"1.0.0": "archived", "1.1.0": "archived"}
    store.promote("default", "m", "1.1.0", "dev")
    store.promote("default", "m", "1.0.0", "dev")
    assert _stages(store) == {"1.0.0": "dev", "1.1.0": "dev"}


def test_store_pushing_straight_into_production_archives_the_holder(store: ModelStore) -> None:
    push(store, "1.0.0", stage="production")
    created = push(store, "1.1.0", stage="production")
    assert created.stage == "production"
    assert _stages(store) == {"1.0.0": "archived", "1.1.0": "production"}


def test_store_stages_are_per_model_and_per_namespace(store: ModelStore) -> None:
    push(store, "1.0.0", stage="production", name="a")
    push(store, "1.0.0", stage="production", name="b")
    push(store, "1.0.0", stage="production", name="a", namespace="other")
    push(store, "2.0.0", stage="production", name="a")
    assert _stages(store, "a") == {"1.0.0": "archived", "2.0.0": "production"}
    assert _stages(store, "b") == {"1.0.0": "production"}
    assert {r.stage for r in store.versions("other", "a")} == {"production"}


def test_store_versions_are_immutable_and_sorted_by_semver(store: ModelStore) -> None:
    for version in ("1.10.0", "1.2.0", "1.9.3", "0.1.0"):
        push(store, version)
    assert [r.version for r in store.versions("default", "m")] == ["0.1.0", "1.2.0", "1.9.3", "1.10.0"]
    with pytest.raises(Conflict, match="versions are immutable"):
        push(store, "1.2.0")


def test_store_unknown_versions_and_models(store: ModelStore) -> None:
    with pytest.raises(NotFound, match="model 'm' not found"):
        store.promote("default", "m", "1.0.0", "production")
    push(store, "1.0.0")
    with pytest.raises(NotFound, match=r"has no version 9\.9\.9"):
        store.promote("default", "m", "9.9.9", "production")
    with pytest.raises(NotFound):
        store.delete_version("default", "m", "9.9.9")


def test_store_deleting_the_last_version_deletes_the_model(store: ModelStore) -> None:
    push(store, "1.0.0")
    store.create_version("default", "m", "2.0.0", parse_version("2.0.0"), "safetensors",
                         {"w.safetensors": {"sha256": "cd" * 32, "size": 5}}, {})
    assert store.all_digests() == {"ab" * 32, "cd" * 32}
    store.delete_version("default", "m", "1.0.0")
    assert store.names("default") == ["m"] and store.all_digests() == {"cd" * 32}
    store.delete_version("default", "m", "2.0.0")
    assert store.names("default") == [] and store.versions("default", "m") == []
    assert store.all_digests() == set()
