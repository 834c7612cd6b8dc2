"""``GET /api/alerts``: firing and recent alerts, for the dashboard and for people."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from stratus.observe.alerts import AlertManager

router = APIRouter(prefix="/api")


@router.get("/alerts", summary="Firing alerts, then recently resolved ones, newest first")
async def list_alerts(request: Request, state: str | None = None) -> dict[str, Any]:
    manager: AlertManager = request.app.state.alerts
    alerts = manager.view()
    if state is not None:
        alerts = [alert for alert in alerts if alert["state"] == state]
    return {"alerts": alerts}
