"""Per-namespace quotas: the ``quotas:`` section of the server's config file, and the pure rules
for its static caps (replicas and memory a namespace may claim). 0 means unlimited."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stratus.spec import NAME_PATTERN

M = TypeVar("M", bound=BaseModel)


class NamespaceQuota(BaseModel):
    """The limits of one namespace (or the default for every namespace)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_rps: float = Field(default=0.0, ge=0, description="requests/s per API key")
    key_burst: float | None = Field(default=None, ge=1, description="default: one second's worth")
    namespace_rps: float = Field(default=0.0, ge=0, description="requests/s of the whole namespace")
    namespace_burst: float | None = Field(default=None, ge=1)
    max_concurrency: int = Field(default=0, ge=0, description="data-plane requests in flight")
    max_replicas: int = Field(default=0, ge=0, description="replicas of all its deployments")
    max_memory_mb: int = Field(default=0, ge=0, description="memory_mb x replicas, summed")
    max_queued: int = Field(default=0, ge=0,
                            description="asynchronous invocations waiting in the queue")

    def key_burst_for(self, rate: float) -> float:
        return self.key_burst or max(1.0, rate)

    def namespace_burst_for(self) -> float:
        return self.namespace_burst or max(1.0, self.namespace_rps)

    @property
    def rate_limited(self) -> bool:
        return self.key_rps > 0 or self.namespace_rps > 0


class QuotasSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: dict[str, Any] = {}
    namespaces: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Quotas:
    default: NamespaceQuota
    namespaces: Mapping[str, NamespaceQuota]

    def for_namespace(self, namespace: str) -> NamespaceQuota:
        return self.namespaces.get(namespace, self.default)

    def all(self) -> list[NamespaceQuota]:
        return [self.default, *self.namespaces.values()]

    @property
    def rate_limited(self) -> bool:
        return any(quota.rate_limited for quota in self.all())

    @property
    def concurrency_limited(self) -> bool:
        return any(quota.max_concurrency for quota in self.all())


UNLIMITED = Quotas(NamespaceQuota(), {})


def quotas_from(section: Mapping[str, Any]) -> Quotas:
    """Validate the ``quotas:`` section; a namespace's entry overrides the default's fields.
    A bad section is a ValueError naming the problem, so the server fails at start."""
    raw = _validated(QuotasSection, dict(section), "quotas")
    for name in raw.namespaces:
        if not re.fullmatch(NAME_PATTERN, name):  # it would never match a request's namespace
            raise ValueError(f"invalid quotas.namespaces in the config file: {name!r} is not a "
                             "namespace name (lowercase letters, digits and hyphens)")
    default = _validated(NamespaceQuota, raw.default, "quotas.default")
    namespaces = {name: _validated(NamespaceQuota, {**raw.default, **fields}, f"quotas.namespaces.{name}")
                  for name, fields in raw.namespaces.items()}
    return Quotas(default, namespaces)


def _validated(model: type[M], fields: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"invalid {where} in the config file: {problems}") from None


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a deployment may claim: its replica ceiling and each replica's memory."""

    name: str
    max_replicas: int
    memory_mb: int | None  # None: undeclared


# Run by the metadata store inside the transaction that records a deployment, given the
# namespace's deployments as recorded there; it raises to refuse the write.
Admit = Callable[[list[Footprint]], None]


def deploy_problem(quota: NamespaceQuota, namespace: str, wanted: Footprint,
                   others: Iterable[Footprint], undeclared_mb: int) -> str | None:
    """Why ``wanted`` may not be recorded next to the namespace's ``others``, or None.

    The sums take each deployment at its ``max_replicas``: the autoscaler may go that far.
    """
    rest = [other for other in others if other.name != wanted.name]
    if quota.max_replicas:
        total = wanted.max_replicas + sum(other.max_replicas for other in rest)
        if total > quota.max_replicas:
            return (f"namespace {namespace!r} may run at most {quota.max_replicas} replicas "
                    f"(quota max_replicas); deployment {wanted.name!r} asks for up to "
                    f"{wanted.max_replicas}, which makes {total} with its other deployments")
    if quota.max_memory_mb:
        if wanted.memory_mb is None:
            return (f"namespace {namespace!r} caps replica memory at {quota.max_memory_mb} MB "
                    f"(quota max_memory_mb), so deployment {wanted.name!r} must set memory_mb")
        claimed = wanted.max_replicas * wanted.memory_mb + sum(
            other.max_replicas * (other.memory_mb or undeclared_mb) for other in rest)
        if claimed > quota.max_memory_mb:
            return (f"namespace {namespace!r} may claim at most {quota.max_memory_mb} MB of "
                    f"replica memory (quota max_memory_mb); deployment {wanted.name!r} asks for "
                    f"{wanted.max_replicas} x {wanted.memory_mb} MB, which makes {claimed} MB "
                    f"with its other deployments")
    return None


def replica_room(quota: NamespaceQuota, running: int, running_mb: int, memory_mb: int) -> int | None:
    """How many more replicas (of ``memory_mb`` each) the namespace may start now, given
    ``running`` replicas taking ``running_mb``; None when nothing caps it."""
    room: int | None = None
    if quota.max_replicas:
        room = max(0, quota.max_replicas - running)
    if quota.max_memory_mb:
        by_memory = max(0, (quota.max_memory_mb - running_mb) // max(1, memory_mb))
        room = by_memory if room is None else min(room, by_memory)
    return room
