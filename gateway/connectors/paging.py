"""Reading every page of a vendor's paged list, the same way for every REST client.

Vendors name their page parameters and counts differently (each client says how to ask for a
page and when it has all); what they share is handled here: a row the list moved onto a second
page is kept once (by its ``key`` field, ``id`` unless the vendor names another), a page of
nothing new ends the read (the server ignores ``page``), and a list longer than allowed fails
rather than return a part (a caller diffing it would see removals).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.schema.commands import CommandFailed, ErrorCode

#: A row: an object as a rule; one that is not (or has no ``key``) is kept as it is, never merged.
Row = TypeVar("Row")


async def read_pages(
    fetch: Callable[[int], Awaitable[tuple[Any, list[Row]]]],
    last: Callable[[Any, int, list[Row], int], bool],
    *,
    max_pages: int,
    what: str,
    key: str = "id",
) -> list[Row]:
    """Every row, in order of first appearance (a row seen again replaces the first one, in
    its place); ``CommandFailed`` past ``max_pages``.

    ``fetch(page)`` (1-based): the answer and its rows; ``last(answer, page, its rows, rows
    kept so far)``: True when no page follows."""
    found: dict[object, Row] = {}
    for page in range(1, max_pages + 1):
        answer, rows = await fetch(page)
        fresh = 0
        for row in rows:
            ident = row.get(key) if isinstance(row, dict) else None
            slot: object = object() if ident is None else str(ident)
            fresh += slot not in found
            found[slot] = row
        if (page > 1 and not fresh) or last(answer, page, rows, len(found)):
            return list(found.values())
    raise CommandFailed(ErrorCode.FAILED, f"{what}: more than {max_pages} pages; not all read")
