"""The server's components as the routes see them, hung on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from prometheus_client import CollectorRegistry
from starlette.requests import Request

from stratus.config import Settings
from stratus.control.controller import Controller
from stratus.datasets.service import DatasetService
from stratus.dispatch.dispatcher import Dispatcher
from stratus.invocations.service import AsyncService
from stratus.jobs.promotion import Promotion
from stratus.jobs.service import JobService
from stratus.models.service import ModelService
from stratus.observe.payloads import PayloadLog
from stratus.observe.usage import UsageMeter
from stratus.resilience.disk import DiskHealth
from stratus.security.roles import Principal
from stratus.store.artifacts import ArtifactStore
from stratus.store.blobs import NamespaceBlobs


@dataclass
class Components:
    settings: Settings
    controller: Controller
    dispatcher: Dispatcher
    artifacts: ArtifactStore
    metrics: CollectorRegistry
    models: ModelService
    datasets: DatasetService
    blobs: NamespaceBlobs  # what each namespace may see and reference of the artifacts
    usage: UsageMeter | None = None  # set once metering runs; adapters hand it tokens
    payloads: PayloadLog | None = None  # with logging.payloads: request and response bodies
    async_service: AsyncService | None = None  # asynchronous invocations, once started
    jobs: JobService | None = None  # training and evaluation jobs, once started
    promotion: Promotion | None = None  # evaluations, gates, registration
    ready: bool = False
    draining: bool = False  # SIGTERM came: not ready, though still serving for a while
    disk: DiskHealth = field(default_factory=DiskHealth)  # which writers find their disk full


def components(request: Request) -> Components:
    found: Components = request.app.state.components
    return found


def principal_of(request: Request) -> Principal:
    principal: Principal = request.scope["state"]["principal"]
    return principal


def namespace_of(request: Request) -> str:
    return principal_of(request).namespace


Parts = Annotated[Components, Depends(components)]
