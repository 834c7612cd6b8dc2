"""The replica's sync-handler threads: started only as needed, never more than the size, and
a call that raises costs no thread."""

from __future__ import annotations

import threading

import pytest

from stratus.runtime.handler_threads import HandlerThreads

WAIT_S = 10.0  # a hang guard: each wait ends as soon as the threads do their part


def test_calls_run_one_after_another_on_one_thread_when_they_do_not_overlap() -> None:
    threads = HandlerThreads(8)
    for _ in range(20):
        done = threading.Event()
        threads.submit(done.set)
        assert done.wait(WAIT_S)
    assert threads.threads() == 1, "an idle thread takes the next call: no new thread"
    threads.stop()


def test_blocked_calls_start_threads_up_to_the_size_and_the_rest_wait() -> None:
    size = 4
    threads = HandlerThreads(size)
    release = threading.Event()
    running = threading.Semaphore(0)
    finished = threading.Semaphore(0)
    names: set[str] = set()

    def blocked() -> None:
        names.add(threading.current_thread().name)
        running.release()
        release.wait(WAIT_S)
        finished.release()

    for _ in range(size + 3):
        threads.submit(blocked)
    for _ in range(size):
        assert running.acquire(timeout=WAIT_S)
    assert threads.threads() == size
    assert not running.acquire(timeout=0.2), "the 3 beyond the size wait for a free thread"
    release.set()
    for _ in range(size + 3):
        assert finished.acquire(timeout=WAIT_S)
    assert len(names) == size and threads.threads() == size
    threads.stop()


def test_a_call_that_raises_leaves_its_thread_serving(capsys: pytest.CaptureFixture[str]) -> None:
    threads = HandlerThreads(1)

    def broken() -> None:
        raise RuntimeError("a bug in the caller")

    threads.submit(broken)
    done = threading.Event()
    threads.submit(done.set)
    assert done.wait(WAIT_S), "the only thread took the next call"
    assert threads.threads() == 1
    threads.stop()
    assert "a bug in the caller" in capsys.readouterr().err


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HandlerThreads(0)
