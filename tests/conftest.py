"""Shared fixtures: a real Stratus server (one per session, or a fresh one per test)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server import TEST_ENV, StratusServer


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """As root, a session's temporary directories under a root of its own. Servers running
    as root run replicas as their namespace's users, who must search the directories above
    a data dir (``searchable_above``); every pytest session closes /tmp/pytest-of-root to
    0700 again when it starts, which would lock them out of another running session's."""
    if os.geteuid() == 0 and config.option.basetemp is None \
            and not hasattr(config, "workerinput"):  # xdist's workers get theirs below it
        config.option.basetemp = tempfile.mkdtemp(prefix="stratus-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """One server shared by the tests that do not restart it; names keep tests apart."""
    instance = StratusServer(tmp_path_factory.mktemp("stratus"), TEST_ENV)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StratusServer]:
    """A server with its gRPC listener on, shared by one test module."""
    instance = StratusServer(tmp_path_factory.mktemp("stratus-grpc"), TEST_ENV, grpc=True)
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
        for name in ("server", "fresh_server", "grpc_server"):
            instance = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(instance, StratusServer):
                report.sections.append((f"{name} log", instance.log_tail()))
