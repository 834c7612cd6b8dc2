"""Topics under ``/api/topics``: create, list, delete; publish a CloudEvent (structured or
binary HTTP mode, or plain JSON); subscribe a deployment with an attribute filter."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stratus.gateway.authz import needs
from stratus.gateway.routes.triggers_common import TriggersDep
from stratus.gateway.state import namespace_of
from stratus.security.roles import Permission
from stratus.spec import NAME_PATTERN

router = APIRouter(prefix="/api/topics", tags=["triggers"])


class TopicRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: str = Field(pattern=NAME_PATTERN)
    name: str | None = Field(None, description="Default: the deployment's name")
    filter: dict[str, Any] = Field(default_factory=dict, description=(
        "CloudEvents attribute or extension: the exact value an event must have"))


@router.post("", dependencies=[needs(Permission.WRITE)], status_code=201,
             summary="Create a topic")
async def create_topic(body: TopicRequest, request: Request,
                       triggers: TriggersDep) -> JSONResponse:
    view = await triggers.topics.create(namespace_of(request), body.name)
    return JSONResponse(view, status_code=201)


@router.get("", dependencies=[needs(Permission.READ)], summary="The namespace's topics")
async def list_topics(request: Request, triggers: TriggersDep) -> dict[str, Any]:
    return {"topics": await triggers.topics.ls(namespace_of(request))}


@router.delete("/{topic}", dependencies=[needs(Permission.WRITE)],
               summary="Delete a topic and its subscriptions")
async def delete_topic(topic: str, request: Request, triggers: TriggersDep) -> dict[str, Any]:
    await triggers.topics.delete(namespace_of(request), topic)
    return {"deleted": topic}


@router.post("/{topic}/publish", dependencies=[needs(Permission.INVOKE)], status_code=202,
             summary="Publish a CloudEvent: one async invocation per matching subscription",
             openapi_extra={"requestBody": {"content": {
                 "application/cloudevents+json": {"schema": {"type": "object"}},
                 "application/json": {"schema": {}}}}})
async def publish(topic: str, request: Request, triggers: TriggersDep) -> JSONResponse:
    answer = await triggers.topics.publish_http(namespace_of(request), topic,
                                                dict(request.headers), await request.body())
    return JSONResponse(answer, status_code=202)


@router.post("/{topic}/subscriptions", dependencies=[needs(Permission.WRITE)],
             status_code=201, summary="Subscribe a deployment to a topic")
async def subscribe(topic: str, body: SubscriptionRequest, request: Request,
                    triggers: TriggersDep) -> JSONResponse:
    view = await triggers.topics.subscribe(namespace_of(request), topic, body.deployment,
                                           body.filter, body.name)
    return JSONResponse(view, status_code=201)


@router.get("/{topic}/subscriptions", dependencies=[needs(Permission.READ)],
            summary="A topic's subscriptions")
async def list_subscriptions(topic: str, request: Request,
                             triggers: TriggersDep) -> dict[str, Any]:
    return {"subscriptions": await triggers.topics.subscriptions(namespace_of(request), topic)}


@router.delete("/{topic}/subscriptions/{name}", dependencies=[needs(Permission.WRITE)],
               summary="Delete a subscription")
async def unsubscribe(topic: str, name: str, request: Request,
                      triggers: TriggersDep) -> dict[str, Any]:
    await triggers.topics.unsubscribe(namespace_of(request), topic, name)
    return {"deleted": name}
