"""Rate limits and the concurrency cap, as pure policy: token buckets per key and per namespace
and in-flight counts per namespace. The caller passes the clock; nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass

from stratus.security.quotas import NamespaceQuota, Quotas
from stratus.security.roles import Principal

MAX_BUCKETS = 100_000  # per registry; beyond it, full (idle) buckets go first


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a request takes one token."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def take(self, now: float) -> float:
        """0 when a token was taken; else the seconds until one is there (for Retry-After)."""
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def give_back(self) -> None:
        """Return a token taken for a request that another limit then refused."""
        self.tokens = min(self.burst, self.tokens + 1.0)

    def idle(self, now: float) -> bool:
        """Full by ``now``: forgetting it loses nothing, since a new bucket starts full."""
        return self.tokens + (now - self.last) * self.rate >= self.burst


class BucketRegistry:
    """Token buckets by name, bounded: when full, idle buckets are forgotten first, then the
    least recently used."""

    def __init__(self, capacity: int = MAX_BUCKETS) -> None:
        self.capacity = capacity
        self.buckets: dict[str, TokenBucket] = {}

    def bucket(self, name: str, rate: float, burst: float, now: float) -> TokenBucket:
        found = self.buckets.get(name)
        if found is None:
            if len(self.buckets) >= self.capacity:
                self._evict(now)
            found = self.buckets[name] = TokenBucket(rate, burst, now)
        elif found.rate != rate or found.burst != burst:  # its limit changed (a key's own rate)
            found.refill(now)
            found.rate, found.burst = rate, burst
            found.tokens = min(found.tokens, burst)
        return found

    def _evict(self, now: float) -> None:
        self.buckets = {name: b for name, b in self.buckets.items() if not b.idle(now)}
        excess = len(self.buckets) - self.capacity // 2
        if excess > 0:  # all busy: drop the least recently used, which at worst get a new burst
            for name, _ in sorted(self.buckets.items(), key=lambda item: item[1].last)[:excess]:
                del self.buckets[name]

    def __len__(self) -> int:
        return len(self.buckets)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: which limit, and how long until it would pass."""

    scope: str  # "key" or "namespace"
    limit: float  # requests a second
    retry_after: float
    subject: str  # the key's or the namespace's name

    def message(self) -> str:
        return (f"rate limit of {self.limit:g} requests/s for {self.scope} {self.subject!r} "
                f"exceeded; retry in {self.retry_after:.2f}s")


def key_name(principal: Principal) -> str:
    """What a per-key limit counts by: the key's id, else the actor (a JWT subject, bootstrap)."""
    return principal.key_id or principal.actor


class RateLimiter:
    """Per-key and per-namespace token buckets under one configuration. ``check`` costs a dict
    lookup when neither limit applies."""

    def __init__(self, quotas: Quotas, capacity: int = MAX_BUCKETS) -> None:
        self.quotas = quotas
        self.keys = BucketRegistry(capacity)
        self.namespaces = BucketRegistry(capacity)

    def check(self, principal: Principal, key_rps_override: float | None,
              now: float) -> Refusal | None:
        """Take a token from the key's and the namespace's buckets, or neither."""
        quota = self.quotas.for_namespace(principal.namespace)
        key_rps = quota.key_rps if key_rps_override is None else key_rps_override
        key_bucket = None
        if key_rps > 0:
            name = key_name(principal)
            burst = quota.key_burst_for(key_rps)
            key_bucket = self.keys.bucket(name, key_rps, burst, now)
            wait = key_bucket.take(now)
            if wait:
                return Refusal("key", key_rps, wait, name)
        if quota.namespace_rps > 0:
            bucket = self.namespaces.bucket(principal.namespace, quota.namespace_rps,
                                            quota.namespace_burst_for(), now)
            wait = bucket.take(now)
            if wait:
                if key_bucket is not None:
                    key_bucket.give_back()
                return Refusal("namespace", quota.namespace_rps, wait, principal.namespace)
        return None


class ConcurrencyGate:
    """In-flight requests per namespace against each namespace's ``max_concurrency``."""

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas
        self.inflight: dict[str, int] = {}

    def enter(self, namespace: str) -> NamespaceQuota | None:
        """None when admitted (counted: ``leave`` must follow); else the quota it hit."""
        quota = self.quotas.for_namespace(namespace)
        cap = quota.max_concurrency
        if cap:
            count = self.inflight.get(namespace, 0)
            if count >= cap:
                return quota
            self.inflight[namespace] = count + 1
        return None

    def leave(self, namespace: str) -> None:
        if self.quotas.for_namespace(namespace).max_concurrency:
            count = self.inflight.get(namespace, 0) - 1
            if count > 0:
                self.inflight[namespace] = count
            else:
                self.inflight.pop(namespace, None)
