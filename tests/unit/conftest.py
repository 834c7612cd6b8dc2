"""Unit-test settings: Hypothesis runs derandomized and without a database, so runs repeat exactly."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "stratus-unit",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("stratus-unit")
