"""The price sheet and the cost of a workload under it (pure arithmetic).

Defaults follow AWS Lambda's public x86 prices: $0.20 per million requests, $0.0000166667
per GB-second of execution, and $0.0000041667 per GB-second of capacity kept warm but idle
(Lambda's provisioned-concurrency rate).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PriceSheet:
    per_request: float = 0.20 / 1_000_000
    per_gb_second: float = 0.0000166667  # while a replica serves at least one request
    per_idle_gb_second: float = 0.0000041667  # while a replica is up with nothing to do
    memory_gb: float = 1.0  # per replica, when a deployment sets no memory limit

    def cost(self, requests: int, busy_replica_seconds: float,
             idle_replica_seconds: float, memory_gb: float | None = None) -> float:
        memory = self.memory_gb if memory_gb is None else memory_gb
        return (requests * self.per_request
                + busy_replica_seconds * memory * self.per_gb_second
                + idle_replica_seconds * memory * self.per_idle_gb_second)


DEFAULT_PRICES = PriceSheet()
