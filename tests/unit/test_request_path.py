"""The request path between the adapters and the dispatcher: the revision header, choosing the
pool a request goes to, and where a request queues when its pool leaves the route."""

from __future__ import annotations

import asyncio

import pytest

from stratus.dispatch.dispatcher import Dispatcher
from stratus.dispatch.pool import PoolLimits, PoolReplica, RevisionPool
from stratus.dispatch.route import Route
from stratus.dispatch.traffic import TrafficSplit
from stratus.errors import BadRequest, NotFound
from stratus.gateway.http import pinned_revision, revision_header, stratus_headers

LIMITS = PoolLimits(max_concurrency=1, timeout_s=1.0, max_queued=10, queue_timeout_s=5.0)


class StandInChannel:
    """All that mark_ready reads from a replica channel."""

    pid = 1000


def _pools(*revisions: int) -> dict[int, RevisionPool]:
    return {rev: RevisionPool("default", "d", rev, LIMITS, lambda pool: None) for rev in revisions}


def _route(pools: dict[int, RevisionPool], shares: dict[int, int],
           shadow: RevisionPool | None = None, **sticky: str) -> Route:
    primary = pools[max(shares, key=lambda rev: shares[rev])]
    routed = {rev: pools[rev] for rev in shares}
    return Route(split=TrafficSplit.of(shares), pools=routed, primary=primary, shadow=shadow,
                 **sticky)


def _ready(pool: RevisionPool, replica_id: str) -> PoolReplica:
    replica = pool.add_starting(replica_id)
    pool.mark_ready(replica, StandInChannel(), init_ms=1.0)  # type: ignore[arg-type]
    return replica


def test_the_revision_header_holds_a_number_or_is_a_clear_error() -> None:
    assert pinned_revision(None) is None
    assert pinned_revision("  ") is None
    assert pinned_revision(" 3 ") == 3
    for bad in ("latest", "-1", "0", "1.5", "²"):
        with pytest.raises(BadRequest, match="x-stratus-revision must be a revision number"):
            pinned_revision(bad)
    assert revision_header(4) == (b"x-stratus-revision", b"4")
    assert stratus_headers(4, True) == [(b"x-stratus-revision", b"4"),
                                        (b"x-stratus-cold-start", b"true"),
                                        (b"x-stratus-attempts", b"1")]
    assert stratus_headers(4, False, 2)[2] == (b"x-stratus-attempts", b"2")


def test_choose_takes_a_pin_then_a_sticky_key_then_the_draw() -> None:
    dispatcher = Dispatcher()
    pools = _pools(1, 2, 3)
    dispatcher.set_route(_route(pools, {1: 50, 2: 50, 3: 0}, sticky_header="x-user"))
    assert dispatcher.choose("default", "d", 3).pool is pools[3], "weight 0: pins only"
    keyed = {dispatcher.choose("default", "d", None, {"x-user": "ann"}).pool for _ in range(20)}
    assert len(keyed) == 1, "a sticky key keeps its revision"
    drawn = {dispatcher.choose("default", "d").pool.revision for _ in range(200)}
    assert drawn == {1, 2}
    with pytest.raises(NotFound, match="revision 7 of deployment 'd' takes no traffic"):
        dispatcher.choose("default", "d", 7)
    with pytest.raises(NotFound, match="deployment 'nope' not found"):
        dispatcher.choose("default", "nope")
    assert dispatcher.is_live("default", "d", 1) is False, "live means registered"
    dispatcher.register(pools[1])
    assert dispatcher.is_live("default", "d", 1)


def test_a_choice_names_the_shadow_unless_the_request_is_pinned_to_it() -> None:
    dispatcher = Dispatcher()
    pools = _pools(1, 2)
    dispatcher.set_route(_route(pools, {1: 100}, shadow=pools[2]))
    choice = dispatcher.choose("default", "d")
    assert (choice.pool, choice.shadow) == (pools[1], pools[2])
    pinned = dispatcher.choose("default", "d", 2)
    assert (pinned.pool, pinned.shadow) == (pools[2], None)


async def test_a_request_that_chose_a_pool_before_it_left_the_route_queues_on_the_primary() -> None:
    dispatcher = Dispatcher()
    pools = _pools(1, 2)
    dispatcher.set_route(_route(pools, {1: 100}))
    chosen = dispatcher.choose("default", "d").pool
    dispatcher.set_route(_route(pools, {2: 100}))  # between the choice and the run
    waiting = asyncio.create_task(chosen.wait_for_slot(0.0))
    await asyncio.sleep(0)
    assert not chosen.waiters and len(pools[2].waiters) == 1
    replica = _ready(pools[2], "r2")
    assert await waiting is replica
    dispatcher.set_route(_route(pools, {1: 50, 2: 50}))
    assert pools[1].moved_to is None, "back in the route: it queues its own requests again"
    dispatcher.set_route(_route(pools, {2: 100}, shadow=pools[1]))
    assert pools[1].moved_to is None, "as the shadow it keeps its copies"
