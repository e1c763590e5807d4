"""XSwitch's polled source, configuration changes: XCC pushes nothing when an administrator
edits extensions, queues, IVRs or hotlines, so they are polled over REST and compared.

Every ``config_poll_interval_s`` the :class:`ConfigPoller` lists the four kinds (every page)
and hashes each object by id. What appeared, changed or went since the previous poll becomes
one ``config.changed`` event per kind and action (``object``, ``action``
added|changed|removed, ``ids``). It is a :class:`~gateway.connectors.polling.Poller`, whose
cursor is the hash table: persisted in the PBX's slice of the state store, with the outage
handling (one warning, link state, backoff, a ``gateway.gap`` after an interruption) every
polled link has. Hence:

* the first poll ever is the baseline: it saves the hashes and publishes nothing;
* a restart (or the next owner after a takeover) compares with the saved hashes: what was
  announced is not announced again, what changed while nobody watched is;
* a poll that fails, or cannot read every page, changes nothing (a partial list would look
  like removals).

Hashes leave out ``updated_at`` (a save that changes nothing else is no change a consumer can
act on) and compare values as text: the document shows the same field as ``"0"`` in a list and
``0`` in a ``get`` (lines 101 and 158), and a server's choice of form is not a change.

IVRs: ``ivrs/list`` returns the top-level menus only (line 745), so with ``ivr_trees`` (the
default) each one is read with ``ivrs/get`` (lines 802-921) and hashed with its sub-menus: a
change anywhere below is announced as a change of the top-level IVR's id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Final

import orjson

from gateway.connectors.link import LinkState
from gateway.connectors.polling import Poller, PollResult
from gateway.connectors.rest import AuthRefused
from gateway.connectors.xswitch.client import XccClient, records
from gateway.runtime.backoff import Backoff
from gateway.runtime.statestore import KeyValue
from gateway.schema.commands import CommandFailed, ErrorCode
from gateway.schema.events import CloudEvent, ConfigChangedData, ConnectionState, make_event

#: ``object`` name -> the list endpoint (lines 61, 257, 749, 992).
LISTS: Final[dict[str, str]] = {
    "extension": "/api/xcc/extensions/list",
    "queue": "/api/xcc/queues/list",
    "ivr": "/api/xcc/ivrs/list",
    "hotline": "/api/xcc/hotlines/list",
}
IVR_GET: Final = "/api/xcc/ivrs/get"
#: Fields left out of the content hash (see the module docstring).
VOLATILE: Final = frozenset({"updated_at"})
CURSOR_VERSION: Final = 1
#: A Poller name: the cursor is ``cursor:config`` in the PBX's store slice.
POLLER_NAME: Final = "config"

Snapshot = dict[str, dict[str, str]]  # object -> id -> content hash


def _canonical(value: Any) -> Any:
    """Values as text (``0`` and ``"0"`` alike), volatile fields dropped, at every depth."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def content_hash(record: dict[str, Any]) -> str:
    """A record's content, without ``updated_at``, as 16 hex digits."""
    canonical = orjson.dumps(_canonical(record), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


def _id_order(ident: str) -> tuple[int, int | str]:
    return (0, int(ident)) if ident.isdigit() else (1, ident)


class ConfigPoller(Poller):
    """Polls one XCC system's configuration and publishes what changed.

    ``state`` is the link's :class:`LinkState` (events go out through it and the poller reports
    under its own source ``poll:config``); ``store`` the PBX's slice of the state store.
    Start it with ``await poller.run()`` in the connector's task group.
    """

    def __init__(
        self,
        client: XccClient,
        store: KeyValue,
        state: LinkState,
        *,
        interval_s: float,
        backoff: Backoff,
        ivr_trees: bool = True,
        page_size: int = 100,
        timeout_s: float = 120.0,
        max_auth_rejections: int = 3,
    ) -> None:
        super().__init__(
            POLLER_NAME, state, store, interval_s=interval_s, backoff=backoff, timeout_s=timeout_s
        )
        self.client = client
        self._ivr_trees = ivr_trees
        self._page_size = page_size
        self._max_auth_rejections = max_auth_rejections

    #: XCC documents no rate limit: a 429 (or a 5xx with ``Retry-After``) is an outage.
    rate_limits_defer = False

    def stops(self, exc: AuthRefused) -> bool:
        """A ``dev_key`` refused ``max_auth_rejections`` times in a row stops polling; the
        client authenticates again by itself until then."""
        return self.client.auth_rejections >= self._max_auth_rejections

    def stop_state(self, exc: AuthRefused) -> ConnectionState:
        return "auth_failed"  # a 403 to the dev_key refuses the key, not the rights

    def stop_reason(self, exc: AuthRefused) -> str:
        rejections = self.client.auth_rejections
        return f"dev_key refused {rejections} times ({exc.message}); fix it and restart"

    async def poll(self, cursor: Any) -> PollResult:
        """This snapshot against the cursor's, and the new cursor."""
        snapshot = await self.snapshot()
        count = sum(len(ids) for ids in snapshot.values())
        previous = _hashes(cursor)
        sequences: dict[str, int] = dict(cursor.get("seq") or {}) if previous is not None else {}
        events: list[CloudEvent] = []
        if previous is not None:
            for kind, now in snapshot.items():
                before = previous.get(kind)
                if before is None:  # a kind this cursor did not know yet: its baseline
                    continue
                events.extend(self._changes(kind, before, now, sequences))
        new_cursor = {"v": CURSOR_VERSION, "hashes": snapshot, "seq": sequences}
        return PollResult(events, new_cursor, records=count)

    async def snapshot(self) -> Snapshot:
        """Every object of the four kinds, id -> content hash."""
        snapshot: Snapshot = {}
        for kind, path in LISTS.items():
            rows = await self.client.list_all(path, {}, page_size=self._page_size)
            hashes = {
                str(row["id"]): content_hash(row) for row in rows if row.get("id") is not None
            }
            if kind == "ivr" and self._ivr_trees:
                hashes = await self._ivr_tree_hashes(sorted(hashes, key=_id_order))
            snapshot[kind] = hashes
        return snapshot

    async def _ivr_tree_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """Each top-level IVR hashed with its sub-menus; one gone meanwhile is left out."""
        hashes: dict[str, str] = {}
        for ident in ids:
            try:
                answer = await self.client.call(IVR_GET, {"id": ident})
            except CommandFailed as exc:
                if exc.code is ErrorCode.NOT_FOUND:
                    continue  # deleted between the list and now: it is removed
                raise
            tree = [row for row in records(answer) if str(row.get("id")) == ident]
            hashes[ident] = content_hash(tree[0] if tree else {"ivrs": records(answer)})
        return hashes

    def _changes(
        self, kind: str, before: dict[str, str], now: dict[str, str], sequences: dict[str, int]
    ) -> list[CloudEvent]:
        added = sorted(now.keys() - before.keys(), key=_id_order)
        removed = sorted(before.keys() - now.keys(), key=_id_order)
        changed = sorted(
            (i for i in now.keys() & before.keys() if now[i] != before[i]), key=_id_order
        )
        if not (added or removed or changed):
            return []
        # The sequence tells an object changed back and forth (A -> B -> A -> B) apart from
        # its first change, which has the same ids and hashes; it is saved with the hashes,
        # so a poll repeated after a crash recomputes the same event ids.
        sequences[kind] = sequence = sequences.get(kind, 0) + 1
        out = []
        for action, ids, hashes in (
            ("added", added, now),
            ("changed", changed, now),
            ("removed", removed, before),
        ):
            if ids:
                out.append(self._event(kind, action, ids, [hashes[i] for i in ids], sequence))
        return out

    def _event(
        self, kind: str, action: str, ids: list[str], hashes: list[str], sequence: int
    ) -> CloudEvent:
        digest = hashlib.sha256(
            ",".join(f"{i}={h}" for i, h in zip(ids, hashes, strict=True)).encode()
        )
        return make_event(
            self.state.ctx(),
            "config.changed",
            ConfigChangedData(object=kind, action=action, ids=ids),
            identity=("config", kind, action, sequence, ",".join(ids), digest.hexdigest()[:16]),
            subject=kind,
            vendorevent=LISTS[kind],
        )


def _hashes(cursor: Any) -> dict[str, dict[str, str]] | None:
    """The saved hashes, or None when there is no usable cursor (then this poll is a baseline)."""
    if not isinstance(cursor, dict) or cursor.get("v") != CURSOR_VERSION:
        return None
    hashes = cursor.get("hashes")
    if not isinstance(hashes, dict):
        return None
    return {
        str(kind): {str(i): str(h) for i, h in ids.items()}
        for kind, ids in hashes.items()
        if isinstance(ids, dict)
    }
