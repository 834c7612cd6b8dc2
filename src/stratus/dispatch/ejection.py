"""Outlier ejection on the request path: which of a pool's replicas the picker may use, and
what each request's end tells the pool's ``OutlierDetector`` (``resilience/outliers.py``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Sequence
from typing import TypeVar

from stratus.resilience.outliers import OutlierDetector, OutlierSettings
from stratus.resilience_spec import OutliersSpec

log = logging.getLogger("stratus.dispatch")

R = TypeVar("R", bound=Hashable)


class Ejection:
    """A pool's detector, keyed by its replicas, built from the deployment's ``outliers``."""

    def __init__(self, spec: OutliersSpec, now: float) -> None:
        self.spec = spec
        self.detector = OutlierDetector(OutlierSettings(
            consecutive_failures=spec.consecutive_failures, interval_s=spec.interval_s,
            min_requests=spec.min_requests, ratio_margin=spec.ratio_margin,
            base_ejection_s=spec.base_ejection_s,
            max_ejection_s=max(spec.max_ejection_s, spec.base_ejection_s),
            max_ejected_share=spec.max_ejected_share,
        ), now)

    def usable(self, free: list[R], ready: Sequence[R]) -> list[R]:
        """The free replicas the picker may use. When every ready replica is ejected, all of
        them are (as Envoy's panic threshold): a deployment serves through its outliers
        rather than not at all."""
        detector = self.detector
        if not detector.ejected:
            return free
        now = time.monotonic()
        kept = [replica for replica in free if detector.available(replica, now)]
        if kept or any(detector.available(replica, now) for replica in ready):
            return kept
        return free

    def finished(self, deployment: str, replica: Hashable, name: str, status: int | None,
                 now: float, token: Hashable | None = None) -> None:
        """Request ``token`` on ``replica`` ended with ``status`` (None: its caller left)."""
        detector = self.detector
        if status is None:
            detector.abandoned(replica, token)
            return
        for change in detector.record(replica, status < 500, now, token):
            if change.ejected:
                log.warning("replica %s of %s ejected: %s", name, deployment, change.reason)
            else:
                log.info("replica %s of %s readmitted: %s", name, deployment, change.reason)


def ejection_for(spec: OutliersSpec, current: Ejection | None,
                 ready: Sequence[Hashable]) -> Ejection | None:
    """A pool's detector for ``spec`` (None when disabled); an unchanged spec keeps the
    current one, with what it knows."""
    if not spec.enabled:
        return None
    if current is not None and current.spec == spec:
        return current
    ejection = Ejection(spec, time.monotonic())
    for replica in ready:
        ejection.detector.add(replica)
    return ejection
