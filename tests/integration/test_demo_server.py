"""The throwaway server the demos run on (examples/demo_server.py: ``make demo``, ``make
demo-embeddings`` and ``make demo-llm`` end in it): a real ``stratus serve`` on a data dir of
its own, whose address and key the CLI gets, stopped on leaving with exit status 0 and its
data dir removed. (test_gguf.py runs the LLM demo's steps on the suite's server instead.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from smollm2 import llm_demo


def test_the_demo_server_serves_the_cli_then_stops_cleanly(
        capsys: pytest.CaptureFixture[str]) -> None:
    demo = llm_demo()  # puts examples/ on the path, as each demo does
    with demo.demo_server() as server:
        started = capsys.readouterr().out
        where = re.search(r"starting `stratus serve` on (\S+) \(SQLite and local processes in "
                          r"(\S+)\)", started)
        assert where is not None and where[1] == server.url, started
        data_dir = Path(where[2])
        assert data_dir.is_dir()
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        assert server.env["STRATUS_URL"] == server.url
        assert server.env["STRATUS_API_KEY"] == server.key
        listed = subprocess.run([demo.STRATUS, "ls", "--json"], env=server.env,
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["deployments"] == []
        denied = httpx.get(f"{server.url}/api/deployments", timeout=10,
                           headers={"authorization": "Bearer sk-not-the-demo-key"})
        assert denied.status_code == 401
    stopped = capsys.readouterr().out
    assert "server stopped (exit status 0)" in stopped, stopped
    assert not data_dir.exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/readyz", timeout=2)
