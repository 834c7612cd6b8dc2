"""Ray Serve 2.60 peer for ``bench/reliability.py`` (run with ``bench/.venv-ray/bin/python``).

The handler is ``bench/handlers/sleeper.py``, the one Stratus runs, called as Stratus calls a
sync handler: on a thread pool of the replica's own, as large as the requests it may take
at once (``max_ongoing_requests``, Stratus's ``max_concurrency``).

``--scenario kills``: one application, ``kills``, of 3 replicas taking 8 requests each (the
settings of ``tests/chaos/test_replica_kills.py``). ``--scenario overload``: two replicas of
two slots (``tests/chaos/test_overload.py``) twice: ``bounded`` at ``/`` with Ray's own
bound, ``max_queued_requests`` 2 (half a service time of the four slots' work, what
Stratus's adaptive limit lets queue at its default tolerance 1.5), refused with 429 and
``Retry-After: 1`` as Stratus's shedding does; and ``queued`` at ``/queued`` with 1,000,
Stratus's default ``max_queued``.

Replicas reserve no CPU: the scheduler would otherwise fit only two on this 2-core machine.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import cloudpickle, serve
from ray.serve.config import BackpressureConfig
from ray_driver import QUIET_LOGGING, parse_args, serve_forever
from starlette.requests import Request

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "handlers"))
import sleeper

# Ray's workers cannot import from bench/handlers: ship the module with the deployment.
cloudpickle.register_pickle_by_value(sleeper)


class Sleeping:
    """The shared handler behind Serve's HTTP ingress."""

    def __init__(self, slots: int) -> None:
        self.handler = sleeper.Sleeper()
        self.pool = ThreadPoolExecutor(max_workers=slots)

    async def __call__(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.handler, body)


def deployment(name: str, replicas: int, slots: int, **options: Any) -> Any:
    return serve.deployment(
        Sleeping, name=name, num_replicas=replicas, max_ongoing_requests=slots,
        ray_actor_options={"num_cpus": 0}, logging_config=QUIET_LOGGING, **options,
    ).bind(slots)


def main() -> None:
    parser_args = parse_args(__doc__ or "", scenario=("kills", "overload"))
    if parser_args.scenario == "kills":
        serve_forever(deployment("kills", 3, 8), app_name="kills", deployment_name="kills",
                      args=parser_args)
        return
    bounded = deployment("bounded", 2, 2, max_queued_requests=2,
                         backpressure_config=BackpressureConfig(status_code=429, retry_after_s=1))
    queued = deployment("queued", 2, 2, max_queued_requests=1000)
    serve_forever(bounded, app_name="bounded", deployment_name="bounded", args=parser_args,
                  more_apps={"queued": queued})


if __name__ == "__main__":
    main()
