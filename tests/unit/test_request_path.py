"""The request path between the adapters and the dispatcher: the revision header."""

from __future__ import annotations

import pytest

from stratus.errors import BadRequest
from stratus.gateway.http import pinned_revision, revision_header, stratus_headers


def test_the_revision_header_holds_a_number_or_is_a_clear_error() -> None:
    assert pinned_revision(None) is None
    assert pinned_revision("  ") is None
    assert pinned_revision(" 3 ") == 3
    for bad in ("latest", "-1", "0", "1.5", "²"):
        with pytest.raises(BadRequest, match="x-stratus-revision must be a revision number"):
            pinned_revision(bad)
    assert revision_header(4) == (b"x-stratus-revision", b"4")
    assert stratus_headers(4, True) == [(b"x-stratus-revision", b"4"),
                                        (b"x-stratus-cold-start", b"true")]
