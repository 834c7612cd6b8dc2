"""Shared fixtures: a real Stratus server (one per session, or a fresh one per test)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server import TEST_ENV, StratusServer


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """One server shared by the tests that do not restart it; names keep tests apart."""
    instance = StratusServer(tmp_path_factory.mktemp("stratus"), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[StratusServer]:
    instance = StratusServer(tmp_path / "data", TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach the tail of the server log: it is where replicas' troubles show."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("server", "fresh_server"):
            instance = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(instance, StratusServer):
                report.sections.append((f"{name} log", instance.log_tail()))
