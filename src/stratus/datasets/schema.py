"""What a version records of its table: the columns with their types and null counts, the
Arrow schema itself (so readers get exactly the inferred types), and a preview of rows as
JSON can carry them."""

from __future__ import annotations

import base64
import datetime
import decimal
import math
from typing import Any

import pyarrow as pa

PREVIEW_ROWS = 20


def describe(table: pa.Table) -> dict[str, Any]:
    """``{"columns": [{"name", "type", "nulls"}], "arrow": <the schema, base64 IPC>}``."""
    columns = [{"name": field.name, "type": str(field.type),
                "nulls": int(table.column(index).null_count)}
               for index, field in enumerate(table.schema)]
    arrow = base64.b64encode(table.schema.serialize().to_pybytes()).decode("ascii")
    return {"columns": columns, "arrow": arrow}


def arrow_schema(described: dict[str, Any]) -> pa.Schema:
    """The Arrow schema that ``describe`` recorded."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(described["arrow"])))


def public(described: dict[str, Any]) -> dict[str, Any]:
    """The schema as people read it: without the encoded Arrow schema."""
    return {key: value for key, value in described.items() if key != "arrow"}


def jsonable(value: Any) -> Any:
    """A cell as JSON carries it: NaN and infinities become null (JSON has neither), times
    ISO 8601 text, durations seconds, decimals text (no precision lost), bytes text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return str(value)


def preview(table: pa.Table, limit: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    """The first ``limit`` rows as records."""
    return [{name: jsonable(cell) for name, cell in row.items()}
            for row in table.slice(0, limit).to_pylist()]
