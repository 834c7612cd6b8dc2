"""Core statements compiled once for the engine's dialect and run on a DBAPI cursor: the
queue's writes skip SQLAlchemy's per-execution work (cache keys, parameter and result
processing), which costs more than SQLite's own work on rows this small."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.sql.expression import Executable

from stratus.queue.records import AsyncInvocation, Status

# AsyncInvocation's fields: the columns a statement returns a record with, in this order.
FIELDS = tuple(AsyncInvocation.__dataclass_fields__)
_STATUS = FIELDS.index("status")
_JSONS = (FIELDS.index("error"), FIELDS.index("source"))


class Compiled:
    """One statement. Its parameters are named; ``run`` orders them for a positional
    driver (SQLite's ``?``) and adds the values the statement was built with."""

    def __init__(self, statement: Executable, dialect: Dialect,
                 column_keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect,  # type: ignore[attr-defined]
                                     column_keys=None if column_keys is None
                                     else list(column_keys))
        self.sql: str = compiled.string
        self._defaults: dict[str, Any] = dict(compiled.params)
        self._order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def params(self, values: Mapping[str, Any] | None = None) -> Any:
        """The driver's parameters: a dict (named style) or a tuple (positional)."""
        merged = {**self._defaults, **values} if values else self._defaults
        return merged if self._order is None else tuple(merged[name] for name in self._order)

    def positional_in(self, names: Sequence[str]) -> bool:
        """Whether the driver takes this statement's parameters as a tuple in ``names``'s
        order, with no value of the statement's own."""
        return self._order is not None and self._order == tuple(names)

    def run(self, cursor: Any, values: Mapping[str, Any] | None = None) -> Any:
        cursor.execute(self.sql, self.params(values))
        return cursor

    def run_many(self, cursor: Any, params: list[Any]) -> None:
        """Once per item of ``params`` (each made by ``params()``)."""
        cursor.executemany(self.sql, params)


def dumps(value: Any) -> str | None:
    """A JSON column's parameter: text, which SQLite stores and PostgreSQL casts to json."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


def record(row: Sequence[Any]) -> AsyncInvocation:
    """A record from a row of the FIELDS columns (and maybe more after them)."""
    values = list(row[: len(FIELDS)])
    values[_STATUS] = Status(values[_STATUS])
    for index in _JSONS:
        if isinstance(values[index], str | bytes):  # SQLite gives JSON as text
            values[index] = json.loads(values[index])
    if values[_JSONS[1]] is None:
        values[_JSONS[1]] = {}
    for index in (FIELDS.index("payload"), FIELDS.index("result")):
        if isinstance(values[index], memoryview):
            values[index] = bytes(values[index])
    return AsyncInvocation(*values)
