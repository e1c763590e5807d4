"""Reading every page of a vendor's paged list, the same way for every REST client.

Vendors name their page parameters and counts differently (each client says how to ask for a
page and when it has all); what they share is handled here: a row the list moved onto a second
page is kept once (by ``id``), a page of nothing new ends the read (the server ignores
``page``), and a list longer than allowed fails rather than return a part (a caller diffing it
would see removals).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.schema.commands import CommandFailed, ErrorCode

Row = dict[str, Any]
#: ``page`` (1-based) -> (the answer, its rows).
FetchPage = Callable[[int], Awaitable[tuple[Any, list[Row]]]]
#: ``(answer, page, its rows, rows kept so far) -> True`` when no page follows.
LastPage = Callable[[Any, int, list[Row], int], bool]


async def read_pages(fetch: FetchPage, last: LastPage, *, max_pages: int, what: str) -> list[Row]:
    """Every row, in order of first appearance; ``CommandFailed`` past ``max_pages``."""
    found: dict[str, Row] = {}
    anonymous: list[Row] = []
    for page in range(1, max_pages + 1):
        answer, rows = await fetch(page)
        fresh = 0
        for row in rows:
            ident = row.get("id")
            if ident is None:
                anonymous.append(row)
                fresh += 1
            else:
                fresh += str(ident) not in found
                found[str(ident)] = row
        if (page > 1 and not fresh) or last(answer, page, rows, len(found) + len(anonymous)):
            return [*found.values(), *anonymous]
    raise CommandFailed(ErrorCode.FAILED, f"{what}: more than {max_pages} pages; not all read")
