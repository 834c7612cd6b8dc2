"""A deployment's route: the revision pools its traffic split names, the shadow that gets a
copy of each request, and where a sticky key is read from."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stratus.dispatch.pool import RevisionPool
from stratus.dispatch.traffic import TrafficSplit, choose


@dataclass(frozen=True)
class Route:
    split: TrafficSplit
    pools: Mapping[int, RevisionPool]  # every revision the split names, weight 0 included
    primary: RevisionPool  # takes the held requests of a pool that leaves the route
    shadow: RevisionPool | None = None
    sticky_header: str | None = None
    sticky_field: str | None = None

    def sticky_key(self, headers: Mapping[str, str] | None, body: Any) -> str | None:
        """The request's A/B key: a header's value or a top-level JSON field's, as text."""
        if self.sticky_header is not None:
            return headers.get(self.sticky_header) if headers is not None else None
        if self.sticky_field is None or body is None:
            return None
        document = body
        if isinstance(body, bytes | bytearray | memoryview):
            try:
                document = json.loads(bytes(body))
            except ValueError:
                return None
        if not isinstance(document, dict) or document.get(self.sticky_field) is None:
            return None
        value = document[self.sticky_field]
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def pick(self, pinned: int | None, key: str | None, draw: float) -> RevisionPool | None:
        """The pool for one request; None when it pins a revision outside the route."""
        revision = choose(self.split, pinned, key, draw)
        pool = self.pools.get(revision)
        if pool is None and self.shadow is not None and self.shadow.revision == revision:
            return self.shadow
        return pool
