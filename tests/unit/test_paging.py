"""The shared reader of paged lists: every row once, in order, never a part of the list."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.connectors.paging import read_pages
from gateway.schema.commands import CommandFailed, ErrorCode


def pages_of(*pages: list[Any]) -> tuple[Any, list[int]]:
    """A fetch over fixed pages (past the last: empty), and the pages it was asked for."""
    asked: list[int] = []

    async def fetch(page: int) -> tuple[Any, list[Any]]:
        asked.append(page)
        rows = pages[page - 1] if page <= len(pages) else []
        return {"page": page}, rows

    return fetch, asked


def until_empty(_answer: Any, _page: int, rows: list[Any], _kept: int) -> bool:
    return not rows


async def test_rows_keep_the_order_of_first_appearance() -> None:
    """A row seen again (the list moved while it was read) stays where it was first seen, in
    its newer form; rows without the key and rows that are no objects are kept as they are."""
    fetch, asked = pages_of(
        [{"id": 1, "v": "old"}, {"name": "no id"}, {"id": 2}],
        [{"id": 1, "v": "new"}, "not an object", {"id": 3}],
    )
    rows = await read_pages(fetch, until_empty, max_pages=10, what="list")
    assert rows == [{"id": 1, "v": "new"}, {"name": "no id"}, {"id": 2}, "not an object", {"id": 3}]
    assert asked == [1, 2, 3]


async def test_the_vendor_names_the_key() -> None:
    fetch, _ = pages_of([{"call_uuid": "a", "id": 1}], [{"call_uuid": "a", "id": 2}, {"id": 3}])
    rows = await read_pages(fetch, until_empty, max_pages=10, what="records", key="call_uuid")
    assert rows == [{"call_uuid": "a", "id": 2}, {"id": 3}]


async def test_a_page_of_nothing_new_ends_the_read() -> None:
    """A server that ignores the page number answers the first page again and again."""
    same = [{"id": 1}, {"id": 2}]
    fetch, asked = pages_of(same, same, same)
    assert await read_pages(fetch, until_empty, max_pages=10, what="list") == same
    assert asked == [1, 2]


async def test_last_is_told_how_many_rows_are_kept() -> None:
    seen: list[tuple[int, int, int]] = []

    def last(_answer: Any, page: int, rows: list[Any], kept: int) -> bool:
        seen.append((page, len(rows), kept))
        return kept >= 3

    fetch, _ = pages_of([{"id": 1}, {"id": 2}], [{"id": 2}, {"id": 3}], [{"id": 4}])
    assert len(await read_pages(fetch, last, max_pages=10, what="list")) == 3
    assert seen == [(1, 2, 2), (2, 2, 3)]


async def test_more_pages_than_allowed_fail_rather_than_return_a_part() -> None:
    fetch, asked = pages_of([{"id": 1}], [{"id": 2}], [{"id": 3}])
    with pytest.raises(CommandFailed) as failed:
        await read_pages(fetch, until_empty, max_pages=2, what="GET /x (pages of 1)")
    assert failed.value.code is ErrorCode.FAILED
    assert failed.value.message == "GET /x (pages of 1): more than 2 pages; not all read"
    assert asked == [1, 2]
