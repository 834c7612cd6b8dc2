"""What the trigger routes share: the triggers on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from stratus.triggers.service import Triggers


def triggers(request: Request) -> Triggers:
    found: Triggers = request.app.state.triggers
    return found


TriggersDep = Annotated[Triggers, Depends(triggers)]
