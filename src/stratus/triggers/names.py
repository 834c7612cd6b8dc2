"""The names of schedules, topics, subscriptions and sources: as deployment names."""

from __future__ import annotations

import re

from stratus.errors import BadRequest
from stratus.spec import NAME_PATTERN


def check_name(kind: str, name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise BadRequest(f"a {kind} name is 1 to 63 lowercase letters, digits or '-', starting "
                         "and ending with a letter or a digit")
