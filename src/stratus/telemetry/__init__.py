"""Tracing: OpenTelemetry spans along the request path, in the gateway, the dispatcher and replicas."""
