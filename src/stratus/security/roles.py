"""Roles, permissions and the authenticated principal: the pure rules of who may do what."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from stratus.resilience.priority import Priority

GLOBAL_NAMESPACE = "*"  # a key scoped here acts in every namespace (the global admin)


class Permission(enum.StrEnum):
    """What a route needs. Every route declares exactly one."""

    PUBLIC = "public"  # health checks and the dashboard's static files: no credentials
    AUTHENTICATED = "authenticated"  # any valid credential: schemas, protocol metadata
    READ = "read"  # see deployments, models, logs, usage, traces in the namespace
    INVOKE = "invoke"  # send requests to deployments
    WRITE = "write"  # deploy, update, delete, upload, set traffic, manage secrets
    ADMIN = "admin"  # keys, audit, quotas of the namespace
    GLOBAL = "global"  # server-wide views that span namespaces (e.g. /metrics)


class Role(enum.StrEnum):
    ADMIN = "admin"
    DEVELOPER = "developer"
    INVOKER = "invoker"
    VIEWER = "viewer"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({Permission.READ, Permission.INVOKE, Permission.WRITE, Permission.ADMIN}),
    Role.DEVELOPER: frozenset({Permission.READ, Permission.INVOKE, Permission.WRITE}),
    Role.INVOKER: frozenset({Permission.INVOKE}),
    Role.VIEWER: frozenset({Permission.READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as, once its credentials are checked.

    ``namespace`` is the namespace the request acts in (for a global admin, the one picked by
    ``X-Stratus-Namespace``); ``actor`` names the credential for the audit log and rate limits:
    ``key:<prefix>``, ``jwt:<subject>`` or ``bootstrap``. ``priority`` is what its requests
    are served at without an ``X-Stratus-Priority`` header, ``max_priority`` the most they may
    ask for (``resilience.priority.request_priority``): an API key's or a token's priority
    is both; the bootstrap key's requests are normal unless they ask, up to critical.
    """

    namespace: str
    role: Role
    actor: str
    is_global: bool = False  # scoped to every namespace; only ever with the admin role
    key_id: str | None = None  # the API key's public prefix, when a key was used
    priority: Priority = Priority.NORMAL
    max_priority: Priority = Priority.NORMAL

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def allows(self, permission: Permission) -> bool:
        return allows(self.role, self.is_global, permission)


def allows(role: Role, is_global: bool, permission: Permission) -> bool:
    if permission is Permission.PUBLIC or permission is Permission.AUTHENTICATED:
        return True
    if permission is Permission.GLOBAL:
        return is_global and role is Role.ADMIN
    return permission in GRANTS[role]
