"""``stratus topic create | ls | rm | publish | subscribe | unsubscribe``: pub/sub topics of
CloudEvents, each matching subscription invoking its deployment."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from stratus.cli.options import ApiKey, AsJson, Namespace, Server, make_client
from stratus.cli.triggers_common import err, json_argument, pairs, show

app = typer.Typer(help="Topics: publish CloudEvents; subscribed deployments are invoked.",
                  no_args_is_help=True)


@app.command("create")
def create(topic: Annotated[str, typer.Argument(help="Topic name")], server: Server = None,
           api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """Create a topic."""
    with make_client(server, api_key, namespace) as client:
        client.json("POST", "/api/topics", json={"name": topic})
    err.print(f"topic {topic} created")


@app.command("ls")
def list_topics(topic: Annotated[str | None, typer.Argument(
                    help="A topic: list its subscriptions instead")] = None,
                as_json: AsJson = False, server: Server = None, api_key: ApiKey = None,
                namespace: Namespace = None) -> None:
    """List the topics, or one topic's subscriptions."""
    with make_client(server, api_key, namespace) as client:
        if topic is None:
            rows: list[dict[str, Any]] = client.json("GET", "/api/topics")["topics"]
            show(rows, ["name", "subscriptions"], as_json)
            return
        rows = client.json("GET", f"/api/topics/{topic}/subscriptions")["subscriptions"]
    show(rows, ["name", "deployment", "filter"], as_json)


@app.command("rm")
def remove(topic: Annotated[str, typer.Argument(help="Topic name")], server: Server = None,
           api_key: ApiKey = None, namespace: Namespace = None) -> None:
    """Delete a topic and its subscriptions."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/topics/{topic}")
    err.print(f"deleted topic {topic}")


@app.command("publish")
def publish(
    topic: Annotated[str, typer.Argument(help="Topic name")],
    data: Annotated[str, typer.Argument(help="JSON: the event's data, or with --event a "
                                             "whole CloudEvent in structured form")],
    event: Annotated[bool, typer.Option("--event", help="DATA is a structured CloudEvent")] = False,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Publish an event; prints its id and the invocations it started."""
    json_argument("DATA", data)
    content_type = "application/cloudevents+json" if event else "application/json"
    with make_client(server, api_key, namespace) as client:
        answer = client.json("POST", f"/api/topics/{topic}/publish", content=data.encode(),
                             headers={"content-type": content_type}, expect=(202,))
    sys.stdout.write(json.dumps(answer, indent=2) + "\n")


@app.command("subscribe")
def subscribe(
    topic: Annotated[str, typer.Argument(help="Topic name")],
    deployment: Annotated[str, typer.Argument(help="The deployment each event invokes")],
    filter: Annotated[list[str] | None, typer.Option(
        "--filter", help="ATTRIBUTE=VALUE the event must have exactly (repeatable)")] = None,
    name: Annotated[str | None, typer.Option(help="Subscription name [default: the "
                                                  "deployment's]")] = None,
    server: Server = None,
    api_key: ApiKey = None,
    namespace: Namespace = None,
) -> None:
    """Subscribe a deployment to a topic."""
    body = {"deployment": deployment, "name": name, "filter": pairs("--filter", filter or [])}
    with make_client(server, api_key, namespace) as client:
        made = client.json("POST", f"/api/topics/{topic}/subscriptions", json=body)
    err.print(f"subscription {made['name']} of topic {topic} created")


@app.command("unsubscribe")
def unsubscribe(topic: Annotated[str, typer.Argument(help="Topic name")],
                name: Annotated[str, typer.Argument(help="Subscription name")],
                server: Server = None, api_key: ApiKey = None,
                namespace: Namespace = None) -> None:
    """Delete a subscription."""
    with make_client(server, api_key, namespace) as client:
        client.json("DELETE", f"/api/topics/{topic}/subscriptions/{name}")
    err.print(f"deleted subscription {name} of topic {topic}")
