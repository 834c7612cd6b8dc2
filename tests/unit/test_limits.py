"""Rate limits, quotas and request-size policies: token buckets, the bucket registry, the
per-key and per-namespace check, the concurrency gate, the quotas section and its caps, and
the JSON nesting-depth limit."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratus.errors import InvalidJSON
from stratus.security.jsondepth import check_depth, exceeds_depth, nesting_depth
from stratus.security.limits import BucketRegistry, ConcurrencyGate, RateLimiter, TokenBucket
from stratus.security.quotas import (
    Footprint,
    NamespaceQuota,
    deploy_problem,
    quotas_from,
    replica_room,
)
from stratus.security.roles import Principal, Role


def principal(namespace: str = "default", key_id: str | None = "sk_a", actor: str = "key:sk_a",
              ) -> Principal:
    return Principal(namespace, Role.INVOKER, actor, False, key_id)


# -- TokenBucket ------------------------------------------------------------------------
def test_bucket_admits_its_burst_then_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token per half second
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_bucket_never_saves_more_than_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2.0, now=0.0)
    assert bucket.take(1000.0) == 0.0 and bucket.take(1000.0) == 0.0
    assert bucket.take(1000.0) > 0
    assert not bucket.idle(1000.0) and bucket.idle(1000.2)


def test_bucket_ignores_a_clock_that_goes_back_and_refunds() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0, now=10.0)
    assert bucket.take(10.0) == 0.0
    assert bucket.take(5.0) == pytest.approx(1.0)  # no tokens from an earlier time
    bucket.give_back()
    assert bucket.take(10.0) == 0.0


def test_bucket_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        TokenBucket(1.0, 0.5, 0.0)


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.5, 200.0), burst=st.floats(2.0, 50.0), offered=st.floats(1.05, 20.0))
def test_admitted_rate_converges_to_the_configured_rate(rate: float, burst: float,
                                                        offered: float) -> None:
    """Steady arrivals faster than the rate, over 2,000 tokens' worth of time: exactly the
    rate is admitted, plus the initial burst (a burst of 2 holds what accrues between two
    arrivals, so no token is lost to the cap)."""
    bucket = TokenBucket(rate, burst, 0.0)
    gap = 1.0 / (rate * offered)
    arrivals = int(2000 * offered)
    admitted = sum(bucket.take(i * gap) == 0.0 for i in range(arrivals))
    elapsed = (arrivals - 1) * gap
    assert rate * elapsed + burst - 1 <= admitted <= rate * elapsed + burst


@settings(max_examples=20, deadline=None)
@given(rate=st.floats(0.5, 200.0), burst=st.floats(1.0, 50.0), offered=st.floats(20.0, 50.0),
       seed=st.integers(0, 2**32 - 1))
def test_poisson_arrivals_are_admitted_at_the_rate(rate: float, burst: float, offered: float,
                                                   seed: int) -> None:
    """Random (Poisson) arrivals: never more than the rate and the burst; less only by the
    tokens that accrue while the bucket is full, about one in ``offered``."""
    bucket = TokenBucket(rate, burst, 0.0)
    rng = random.Random(seed)
    now, admitted = 0.0, 0
    while now < 2000.0 / rate:
        now += rng.expovariate(rate * offered)
        admitted += bucket.take(now) == 0.0
    assert admitted <= rate * now + burst + 1e-6
    assert admitted >= rate * now * (1 - 1 / offered) * 0.97


@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=200))
def test_retry_after_is_exactly_when_a_token_is_there(gaps: list[float]) -> None:
    bucket = TokenBucket(rate=4.0, burst=2.0, now=0.0)
    now = 0.0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        if wait:
            assert bucket.take(now + wait * 0.999) > 0  # not earlier
            assert bucket.take(now + wait + 1e-9) == 0.0  # but then
            now += wait + 1e-9


# -- the registry -----------------------------------------------------------------------
def test_registry_is_bounded_and_forgets_idle_buckets_first() -> None:
    registry = BucketRegistry(capacity=10)
    busy = registry.bucket("busy", 1.0, 5.0, 0.0)
    for _ in range(5):
        busy.take(0.0)  # empty: forgetting it would hand out a fresh burst
    for index in range(9):
        registry.bucket(f"idle-{index}", 1.0, 1.0, 0.0)
    registry.bucket("new", 1.0, 1.0, 1.0)  # at capacity: the full ones go
    assert len(registry) <= 10
    assert registry.bucket("busy", 1.0, 5.0, 1.0) is busy
    assert registry.bucket("busy", 1.0, 5.0, 1.0).take(1.0) == 0.0  # one token came back
    assert registry.bucket("busy", 1.0, 5.0, 1.0).take(1.0) > 0


def test_registry_drops_the_least_recently_used_when_all_are_busy() -> None:
    registry = BucketRegistry(capacity=4)
    for index in range(4):
        registry.bucket(f"k{index}", 0.001, 1.0, float(index)).take(float(index))
    registry.bucket("k4", 0.001, 1.0, 10.0)
    assert len(registry) <= 4 and "k0" not in registry.buckets and "k4" in registry.buckets


def test_registry_applies_a_changed_rate_to_an_existing_bucket() -> None:
    registry = BucketRegistry()
    bucket = registry.bucket("k", 1.0, 10.0, 0.0)
    bucket.take(0.0)
    assert registry.bucket("k", 5.0, 2.0, 0.0) is bucket
    assert (bucket.rate, bucket.burst, bucket.tokens) == (5.0, 2.0, 2.0)


# -- RateLimiter.check ---------------------------------------------------------------------
def test_no_limit_configured_admits_everything() -> None:
    limiter = RateLimiter(quotas_from({}))
    assert all(limiter.check(principal(), None, 0.0) is None for _ in range(1000))
    assert len(limiter.keys) == 0 and len(limiter.namespaces) == 0


def test_key_limit_refuses_with_the_wait_and_names_the_key() -> None:
    limiter = RateLimiter(quotas_from({"default": {"key_rps": 2, "key_burst": 2}}))
    assert limiter.check(principal(), None, 0.0) is None
    assert limiter.check(principal(), None, 0.0) is None
    refusal = limiter.check(principal(), None, 0.0)
    assert refusal is not None and refusal.scope == "key" and refusal.subject == "sk_a"
    assert refusal.retry_after == pytest.approx(0.5)
    assert "2 requests/s for key 'sk_a'" in refusal.message()
    assert limiter.check(principal(key_id="sk_b", actor="key:sk_b"), None, 0.0) is None


def test_a_key_without_an_id_is_limited_by_its_actor() -> None:
    limiter = RateLimiter(quotas_from({"default": {"key_rps": 1}}))
    jwt = principal(key_id=None, actor="jwt:alice")
    assert limiter.check(jwt, None, 0.0) is None
    refusal = limiter.check(jwt, None, 0.0)
    assert refusal is not None and refusal.subject == "jwt:alice"


def test_a_keys_own_rate_overrides_the_namespace_key_rps() -> None:
    limiter = RateLimiter(quotas_from({"default": {"key_rps": 1}}))
    admitted = sum(limiter.check(principal(), 5.0, 0.0) is None for _ in range(20))
    assert admitted == 5  # its burst is one second's worth of its own rate
    unconfigured = RateLimiter(quotas_from({}))
    assert sum(unconfigured.check(principal(), 3.0, 0.0) is None for _ in range(10)) == 3


def test_namespace_limit_is_shared_by_its_keys_and_leaves_others_alone() -> None:
    limiter = RateLimiter(quotas_from({"namespaces": {"team-a": {"namespace_rps": 3}}}))
    keys = [principal("team-a", f"sk_{i}", f"key:sk_{i}") for i in range(6)]
    results = [limiter.check(key, None, 0.0) for key in keys]
    assert sum(r is None for r in results) == 3
    refused = [r for r in results if r is not None]
    assert refused[0].scope == "namespace" and refused[0].subject == "team-a"
    assert all(limiter.check(principal("team-b"), None, 0.0) is None for _ in range(50))


def test_a_request_refused_by_its_namespace_costs_its_key_nothing() -> None:
    limiter = RateLimiter(quotas_from({"default": {"key_rps": 2, "namespace_rps": 1}}))
    assert limiter.check(principal(), None, 0.0) is None
    refusal = limiter.check(principal(), None, 0.0)
    assert refusal is not None and refusal.scope == "namespace"
    bucket = limiter.keys.buckets["sk_a"]
    assert bucket.tokens == pytest.approx(1.0)  # the refused request's token came back


# -- ConcurrencyGate ---------------------------------------------------------------------
def test_concurrency_gate_counts_per_namespace() -> None:
    gate = ConcurrencyGate(quotas_from({"namespaces": {"team-a": {"max_concurrency": 2}}}))
    assert gate.enter("team-a") is None and gate.enter("team-a") is None
    hit = gate.enter("team-a")
    assert hit is not None and hit.max_concurrency == 2
    assert all(gate.enter("default") is None for _ in range(100))  # unlimited: not counted
    assert "default" not in gate.inflight
    gate.leave("team-a")
    assert gate.enter("team-a") is None
    gate.leave("team-a")
    gate.leave("team-a")
    assert "team-a" not in gate.inflight


# -- the quotas section ------------------------------------------------------------------
def test_quotas_section_merges_namespace_overrides_over_the_default() -> None:
    quotas = quotas_from({"default": {"key_rps": 10, "max_replicas": 8},
                          "namespaces": {"team-a": {"max_replicas": 2}}})
    team = quotas.for_namespace("team-a")
    assert (team.key_rps, team.max_replicas) == (10, 2)
    assert quotas.for_namespace("other").max_replicas == 8
    assert quotas.rate_limited and not quotas.concurrency_limited
    assert team.key_burst_for(10) == 10 and NamespaceQuota(key_burst=3).key_burst_for(10) == 3
    assert not quotas_from({}).rate_limited


@pytest.mark.parametrize(("section", "named"), [
    ({"default": {"key_rps": -1}}, "quotas.default"),
    ({"default": {"max_replicas": "many"}}, "quotas.default"),
    ({"namespaces": {"team-a": {"rps": 3}}}, "quotas.namespaces.team-a"),
    ({"namespaces": {"team-a": {"key_burst": 0.5}}}, "quotas.namespaces.team-a"),
    ({"defaults": {}}, "quotas"),
    ({"namespaces": ["team-a"]}, "quotas"),
    ({"namespaces": {"Team-A": {"max_replicas": 1}}}, "quotas.namespaces"),
])
def test_a_bad_quotas_section_is_refused_with_where(section: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=f"invalid {named} in the config file"):
        quotas_from(section)


# -- static caps and room at runtime -----------------------------------------------------
def test_deploy_within_the_replica_cap_passes_and_beyond_is_named() -> None:
    quota = NamespaceQuota(max_replicas=6)
    others = [Footprint("a", 2, None), Footprint("b", 3, None)]
    assert deploy_problem(quota, "team-a", Footprint("c", 1, None), others, 256) is None
    problem = deploy_problem(quota, "team-a", Footprint("c", 2, None), others, 256)
    assert problem is not None and "at most 6 replicas" in problem and "makes 7" in problem
    # Updating a deployment replaces its own footprint rather than adding to it.
    assert deploy_problem(quota, "team-a", Footprint("b", 4, None), others, 256) is None


def test_deploy_within_the_memory_cap_passes_and_beyond_is_named() -> None:
    quota = NamespaceQuota(max_memory_mb=1024)
    others = [Footprint("a", 2, 256)]
    assert deploy_problem(quota, "ns", Footprint("b", 2, 256), others, 256) is None
    problem = deploy_problem(quota, "ns", Footprint("b", 3, 256), others, 256)
    assert problem is not None and "1024 MB" in problem and "makes 1280 MB" in problem
    undeclared = deploy_problem(quota, "ns", Footprint("b", 1, None), others, 256)
    assert undeclared is not None and "must set memory_mb" in undeclared
    # Deployments made before the cap, with no memory_mb, count at the host's estimate.
    assert deploy_problem(quota, "ns", Footprint("b", 1, 512), [Footprint("a", 2, None)], 256) \
        is None
    assert deploy_problem(NamespaceQuota(), "ns", Footprint("b", 1000, None), others, 256) is None


def test_replica_room_takes_the_tighter_of_both_caps() -> None:
    assert replica_room(NamespaceQuota(), 50, 10_000, 256) is None
    assert replica_room(NamespaceQuota(max_replicas=4), 3, 0, 256) == 1
    assert replica_room(NamespaceQuota(max_replicas=4), 6, 0, 256) == 0
    assert replica_room(NamespaceQuota(max_memory_mb=1000), 1, 300, 256) == 2
    assert replica_room(NamespaceQuota(max_replicas=10, max_memory_mb=1000), 1, 300, 256) == 2


# -- JSON nesting depth ------------------------------------------------------------------
def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth // 2) + b"[" * (depth - depth // 2) + b"1" + \
        b"]" * (depth - depth // 2) + b"}" * (depth // 2)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                        max_size=4),
    max_leaves=40)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


@given(json_values)
def test_nesting_depth_matches_the_parsed_document(value: object) -> None:
    data = json.dumps(value).encode()
    assert nesting_depth(data) == _depth(value)
    assert exceeds_depth(data, 3) == (_depth(value) > 3)


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"s": "[[[[{{{{ \\\" ]]]] [[[[", "t": ["[", "{"]}).encode()
    assert nesting_depth(text) == 2
    assert not exceeds_depth(text, 2)


def test_check_depth_refuses_deep_bodies_and_lets_ordinary_ones_pass() -> None:
    check_depth(_nested(64), 64)
    with pytest.raises(InvalidJSON, match="deeper than the limit of 64"):
        check_depth(_nested(65), 64)
    with pytest.raises(InvalidJSON):
        check_depth(b"[" * 100_000, 64)  # unclosed: Python's parser would recurse on it
    check_depth(b"[" * 100_000, 0)  # 0 turns the check off
    wide = json.dumps([[i, i] for i in range(10_000)]).encode()  # many brackets, depth 2
    check_depth(wide, 3)
