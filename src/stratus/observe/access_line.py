"""One JSON access line per finished invocation, shaped as ``JsonFormatter`` shapes a
``stratus.access`` record, made from fragments cached per deployment, revision and outcome."""

from __future__ import annotations

import json
from collections.abc import Callable

from stratus.dispatch.outcomes import Outcome
from stratus.resilience.priority import Priority

ACCESS_LOGGER = "stratus.access"
CACHED = 4096  # fragment sets kept; replicas and statuses churn, so the cache starts over when full

_quote: Callable[[str], str] = json.encoder.encode_basestring
_BOOL = {False: "false", True: "true"}
_PRIORITIES = {priority: priority.name.lower() for priority in Priority}
Fragments = tuple[str, str, str, str, str]
_cache: dict[tuple[object, ...], Fragments] = {}


def access_line(outcome: Outcome) -> str:
    """The line of ``outcome``.

    Spelled out rather than built as a dict for ``json.dumps``: at thousands of invocations a
    second the generic encoder cost a tenth of a gateway's CPU. What a line shares with the
    others of its deployment, revision, replica, status and flags is quoted once and cached,
    and numbers have fixed decimals (ts to the microsecond, milliseconds to the microsecond);
    strings still go through the JSON string encoder, so nothing a client sent can break a
    line.
    """
    key = (outcome.protocol, outcome.namespace, outcome.deployment, outcome.revision,
           outcome.status, outcome.replica_id, outcome.error_type, outcome.retry_denied,
           outcome.attempt, outcome.priority, outcome.cold_start, outcome.shadow)
    fragments = _cache.get(key)
    if fragments is None:
        if len(_cache) >= CACHED:
            _cache.clear()
        fragments = _cache[key] = _fragments(outcome)
    message, identity, after_trace, after_duration, end = fragments
    duration_ms = outcome.latency_s * 1000
    trace_id = outcome.trace_id  # with a client's traceparent, or when sampled
    trace = (f',"trace_id":"{trace_id}","span_id":"{outcome.span_id}"' if trace_id is not None
             else "")
    # Fixed decimals: round() and the repr of floats were most of a line's cost.
    return (f'{{"ts":{outcome.at:.6f},{message}{duration_ms:.1f} ms",'
            f'"request_id":{_quote(outcome.request_id)}{identity}{trace}{after_trace}'
            f'{duration_ms:.3f}{after_duration}{outcome.queue_wait_s * 1000:.3f}{end}')


def _fragments(outcome: Outcome) -> Fragments:
    """The parts of a line that only depend on the cache key, in the line's field order."""
    head = _quote(f"{outcome.protocol} {outcome.namespace}/{outcome.deployment} "
                  f"r{outcome.revision} {outcome.status} ")
    message = f'"level":"info","logger":"{ACCESS_LOGGER}","message":{head[:-1]}'  # still open
    identity = (f',"namespace":{_quote(outcome.namespace)},'
                f'"deployment":{_quote(outcome.deployment)},"revision":{outcome.revision}')
    after_trace = "".join((
        f',"replica":{_quote(outcome.replica_id)}' if outcome.replica_id is not None else "",
        f',"error_type":{_quote(outcome.error_type)}' if outcome.error_type is not None else "",
        f',"retry_denied":"{outcome.retry_denied}"' if outcome.retry_denied is not None else "",
        ',"duration_ms":',
    ))
    after_duration = (f',"status":{outcome.status},"protocol":{_quote(outcome.protocol)},'
                      f'"attempt":{outcome.attempt},'
                      f'"priority":"{_PRIORITIES[outcome.priority]}","queue_wait_ms":')
    end = f',"cold_start":{_BOOL[outcome.cold_start]},"shadow":{_BOOL[outcome.shadow]}}}'
    return message, identity, after_trace, after_duration, end
