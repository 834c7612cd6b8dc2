"""``GET /api/alerts``: firing and recent alerts, for the dashboard and for people."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from stratus.gateway.authz import needs
from stratus.gateway.state import principal_of
from stratus.observe.alerts import AlertManager
from stratus.security.roles import Permission

router = APIRouter(prefix="/api")


@router.get("/alerts",
            dependencies=[needs(Permission.READ)],
            summary="Firing alerts, then recently resolved ones, newest first")
async def list_alerts(request: Request, state: str | None = None) -> dict[str, Any]:
    """A namespace's keys see its own alerts. The global admin sees every namespace's, or one
    namespace's with ``X-Stratus-Namespace``."""
    manager: AlertManager = request.app.state.alerts
    alerts = manager.view()
    principal = principal_of(request)
    if not principal.is_global or "x-stratus-namespace" in request.headers:
        alerts = [alert for alert in alerts if alert["namespace"] == principal.namespace]
    if state is not None:
        alerts = [alert for alert in alerts if alert["state"] == state]
    return {"alerts": alerts}
