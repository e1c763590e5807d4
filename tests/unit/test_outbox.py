"""The durable outbox: order, persistence, and the bound policy (never a CDR, gaps reported)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from gateway.bus.outbox import AGENT_STATES, BOUND_POLICY, Outbox, is_protected
from gateway.schema.events import EVENT_TYPES, CloudEvent
from tests.conftest import wait_for

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def event(n: int, type_: str = "cdr.created", tenant: str = "acme", subject: str | None = None):
    """A minimal envelope; the outbox never looks into ``data``."""
    return CloudEvent(
        id=f"{tenant}-{type_}-{n}",
        source=f"pbx://{tenant}",
        type=type_,
        time=T0 + timedelta(seconds=n),
        subject=subject if subject is not None else f"s{n}",
        tenant=tenant,
        vendor="yeastar",
        data={"n": n},
    )


def ids(outbox: Outbox) -> list[str]:
    return [e.id for _, e in outbox.pending(0, 10**6)]


def test_append_pending_remove_keep_seq_order() -> None:
    outbox = Outbox(":memory:")
    events = [event(n) for n in range(10)]
    seqs = [outbox.append(e) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    assert len(outbox) == 10
    pending = outbox.pending(0, 4)
    assert [s for s, _ in pending] == seqs[:4]
    assert [e for _, e in pending] == events[:4], "round-trips the envelope exactly"
    assert [s for s, _ in outbox.pending(seqs[3], 100)] == seqs[4:]
    assert outbox.remove([seqs[0], seqs[2], 10**9]) == 2, "unknown seqs are ignored"
    assert len(outbox) == 8
    assert ids(outbox) == [e.id for i, e in enumerate(events) if i not in (0, 2)]
    outbox.remove(seqs)
    assert len(outbox) == 0 and outbox.pending() == [] and outbox.oldest_age_s() == 0
    assert outbox.append(event(11)) > seqs[-1], "seq never goes back, even on an empty spool"


def test_spool_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite3"
    outbox = Outbox(path)
    seqs = [outbox.append(event(n)) for n in range(5)]
    outbox.remove(seqs[:2])
    outbox.close()
    again = Outbox(path)
    assert len(again) == 3
    assert ids(again) == [event(n).id for n in (2, 3, 4)]
    assert again.append(event(9)) > seqs[-1]
    again.close()


def test_oldest_age() -> None:
    clock = Clock()
    outbox = Outbox(":memory:", clock=clock)
    outbox.append(event(1))
    clock.now += 42
    outbox.append(event(2))
    assert outbox.oldest_age_s() == pytest.approx(42)
    assert REGISTRY.get_sample_value("gateway_outbox_oldest_age_seconds") == pytest.approx(42)
    outbox.close()
    assert REGISTRY.get_sample_value("gateway_outbox_oldest_age_seconds") == 0


def test_warns_once_per_crossing() -> None:
    outbox = Outbox(":memory:", max_events=100, warn_at=0.5)
    warnings: list[str] = []
    outbox._log = _Recorder(warnings)  # type: ignore[assignment]
    seqs = [outbox.append(event(n)) for n in range(60)]
    assert warnings.count("outbox_filling") == 1
    outbox.remove(seqs[:5])
    outbox.append(event(100))
    assert warnings.count("outbox_filling") == 1, "wobbling near the level does not re-warn"
    outbox.remove(seqs[5:40])
    for n in range(40):
        outbox.append(event(200 + n))
    assert warnings.count("outbox_filling") == 2, "drained below, then filled again"
    assert REGISTRY.get_sample_value("gateway_outbox_events") == len(outbox)


class _Recorder:
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def _record(self, name: str, **_: object) -> None:
        self.sink.append(name)

    warning = info = error = _record


def test_cdrs_are_never_dropped_and_gateway_events_neither() -> None:
    outbox = Outbox(":memory:", max_events=100)
    for n in range(300):
        outbox.append(event(n, "cdr.created" if n % 3 else "gateway.connection"))
    assert len(outbox) == 300, "only protected events: the spool grows past the bound"
    assert outbox.last_shed is None
    for n in range(300, 400):
        outbox.append(event(n, "trunk.status"))
    assert outbox.types().count("cdr.created") == 200
    assert outbox.types().count("trunk.status") <= outbox.headroom


def test_agent_states_are_coalesced_first() -> None:
    outbox = Outbox(":memory:", max_events=100)
    for n in range(20):
        outbox.append(event(n, "cdr.created"))
    for n in range(20, 60):
        outbox.append(event(n, "call.answered"))
    for n in range(60, 101):  # 41 states of 4 extensions x 2 types
        outbox.append(event(n, AGENT_STATES[n % 2], subject=f"ext{n % 4}"))
    report = outbox.last_shed
    assert report is not None
    assert report.coalesced == 41 - 4 and report.dropped == report.dropped_calls == 0
    types = outbox.types()
    assert types.count("cdr.created") == 20 and types.count("call.answered") == 40
    kept = [e for _, e in outbox.pending(0, 1000) if e.type in AGENT_STATES]
    newest: dict[tuple[str, str | None], int] = {}
    for n in range(60, 101):
        newest[(AGENT_STATES[n % 2], f"ext{n % 4}")] = n
    assert sorted(e.data["n"] for e in kept) == sorted(newest.values()), "the newest per key"
    gaps = [e for _, e in outbox.pending(0, 1000) if e.type == "gateway.gap"]
    assert len(gaps) == 1
    assert gaps[0].data["from"].startswith("2024-05-01T08:01:00")
    assert gaps[0].data["to"].startswith("2024-05-01T08:01:36")
    assert gaps[0].data["recovered"] == 0 and gaps[0].tenant == "acme"


def test_non_critical_go_before_calls_and_one_gap_per_tenant() -> None:
    outbox = Outbox(":memory:", max_events=100)
    before = {
        t: REGISTRY.get_sample_value(
            "gateway_outbox_dropped_total",
            {"tenant": t, "vendor": "yeastar", "type": "trunk.status", "reason": "dropped"},
        )
        or 0
        for t in ("a", "b")
    }
    for n in range(50):
        outbox.append(event(n, "call.ringing", tenant="a"))
    for n in range(50, 101):
        outbox.append(event(n, "trunk.status", tenant="a" if n % 2 else "b"))
    report = outbox.last_shed
    assert report is not None
    # 101 > 100: shrink to 95, all from trunk.status (the oldest first), none from call.*
    assert report.dropped == 6 and report.dropped_calls == 0 and report.coalesced == 0
    types = outbox.types()
    assert types.count("call.ringing") == 50 and types.count("trunk.status") == 45
    survivors = [e.data["n"] for _, e in outbox.pending(0, 1000) if e.type == "trunk.status"]
    assert survivors == list(range(56, 101)), "the oldest were dropped"
    gaps = [e for _, e in outbox.pending(0, 1000) if e.type == "gateway.gap"]
    assert sorted(g.tenant for g in gaps) == ["a", "b"], "one gap per tenant"
    gap_a = next(g for g in gaps if g.tenant == "a")
    assert gap_a.data["from"].startswith("2024-05-01T08:00:51")
    assert gap_a.data["to"].startswith("2024-05-01T08:00:55")
    assert gap_a.data["recovered"] == 0 and gap_a.source == "pbx://a"
    for t, dropped in (("a", 3), ("b", 3)):
        after = REGISTRY.get_sample_value(
            "gateway_outbox_dropped_total",
            {"tenant": t, "vendor": "yeastar", "type": "trunk.status", "reason": "dropped"},
        )
        assert after == before[t] + dropped


def test_calls_go_only_when_nothing_else_is_left() -> None:
    outbox = Outbox(":memory:", max_events=100)
    for n in range(3):
        outbox.append(event(n, "vendor.unknown"))
    for n in range(3, 60):
        outbox.append(event(n, "call.ended"))
    for n in range(60, 101):
        outbox.append(event(n, "cdr.created"))
    report = outbox.last_shed
    assert report is not None and report.dropped == 3 and report.dropped_calls == 3
    types = outbox.types()
    assert "vendor.unknown" not in types
    assert types.count("cdr.created") == 41 and types.count("call.ended") == 54
    remaining_calls = [e.data["n"] for _, e in outbox.pending(0, 1000) if e.type == "call.ended"]
    assert remaining_calls == list(range(6, 60)), "the oldest calls went"


def test_age_bound_drops_all_but_protected() -> None:
    clock = Clock()
    outbox = Outbox(":memory:", max_age_s=3600, clock=clock)
    for n, type_ in enumerate(
        ["cdr.created", "call.answered", "agent.presence", "trunk.status", "command.succeeded"]
    ):
        outbox.append(event(n, type_, tenant="old"))
    clock.now += 1800
    outbox.append(event(10, "call.ringing", tenant="new"))
    clock.now += 1801  # the first five are now older than an hour
    report = outbox.expire()
    assert report.expired == 3
    types = outbox.types()
    assert types[:3] == ["cdr.created", "command.succeeded", "call.ringing"]
    assert types[3:] == ["gateway.gap"]
    gap = outbox.pending(0, 100)[-1][1]
    assert gap.tenant == "old"
    assert gap.data["from"].startswith("2024-05-01T08:00:01")
    assert gap.data["to"].startswith("2024-05-01T08:00:03")
    clock.now += 1800  # call.ringing is old now too
    outbox.append(event(11, "call.ended", tenant="new"))  # append checks the age bound too
    assert outbox.types()[-3:] == ["gateway.gap", "call.ended", "gateway.gap"]
    assert "call.ringing" not in outbox.types()


def test_policy_text_is_there_for_the_readme() -> None:
    assert "cdr.*" in BOUND_POLICY and "gateway.gap" in BOUND_POLICY
    assert Outbox.__module__ and "coalesce" in (Outbox.__doc__ or "") + BOUND_POLICY


TYPES = sorted(EVENT_TYPES)
CRITICAL = ("call.", "cdr.", "gateway.", "command.")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(TYPES), st.sampled_from(["a", "b", "c"]), st.integers(0, 5)),
        min_size=1,
        max_size=400,
    ),
    st.integers(1, 120),
)
def test_bound_invariants_hold_for_any_traffic(
    traffic: list[tuple[str, str, int]], max_events: int
) -> None:
    outbox = Outbox(":memory:", max_events=max_events)
    appended_cdrs: set[str] = set()
    tenants = {tenant for _, tenant, _ in traffic}
    for n, (type_, tenant, subject) in enumerate(traffic):
        e = event(n, type_, tenant=tenant, subject=f"x{subject}")
        outbox.append(e)
        if type_.startswith("cdr."):
            appended_cdrs.add(e.id)
        spooled = outbox.pending(0, 10**6)
        present = {ev.id for _, ev in spooled}
        assert appended_cdrs <= present, "a CDR was dropped"
        protected = sum(1 for _, ev in spooled if is_protected(ev.type))
        assert len(outbox) == len(spooled)
        assert len(outbox) <= max(max_events, protected + outbox.headroom) + len(tenants)
        report = outbox.last_shed
        if report is not None and report.dropped_calls:
            # call.* only go once no non-critical event is left
            assert all(ev.type.startswith(CRITICAL) for _, ev in spooled)
        if report is not None and report.total:
            assert len(report.gaps) == len({g.tenant for g in report.gaps}), "one gap per tenant"
            assert all(g.type == "gateway.gap" and g.data["recovered"] == 0 for g in report.gaps)
        outbox.last_shed = None


def test_logging_is_quiet_on_the_hot_path(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outbox = Outbox(":memory:", max_events=1000)
    for n in range(100):
        outbox.append(event(n))
    assert not [r for r in caplog.records if "outbox" in r.getMessage()]


def test_staged_events_are_written_together_and_invisible_until_then(tmp_path: Path) -> None:
    """Group commit: ``stage`` gives the seq at once; nothing reads the event (another
    connection, or ``pending`` on this one) before ``commit``; ``append`` commits the lot."""
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    seqs = [outbox.stage(event(n)) for n in range(3)]
    assert seqs == [1, 2, 3] and len(outbox) == 3 and outbox.staged == 3
    assert outbox.pending() == []
    reader = Outbox(path)
    assert len(reader) == 0, "not on disk yet"
    reader.close()
    outbox.commit()
    assert outbox.staged == 0 and [s for s, _ in outbox.pending()] == seqs
    outbox.stage(event(3))
    assert outbox.append(event(4)) == 5, "append writes what was staged before it, in order"
    outbox.close()
    again = Outbox(path)
    assert ids(again) == [event(n).id for n in range(5)]
    again.close()


def test_close_writes_what_is_staged(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    outbox.stage(event(1))
    outbox.close()
    again = Outbox(path)
    assert ids(again) == [event(1).id]
    again.close()


def test_a_failed_commit_keeps_the_staged_events(tmp_path: Path) -> None:
    """A write that fails (here: the table is gone) is rolled back and raised; the events stay
    staged and go to disk with the next commit that works."""
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.stage(event(1))
    outbox._db.execute("ALTER TABLE outbox RENAME TO parked")
    with pytest.raises(Exception, match="no such table"):
        outbox.commit()
    assert outbox.staged == 1
    outbox._db.execute("ALTER TABLE parked RENAME TO outbox")
    outbox.commit()
    assert outbox.staged == 0 and ids(outbox) == [event(1).id]
    outbox.close()


async def test_checkpoints_run_off_the_event_loop(tmp_path: Path) -> None:
    """The WAL reaches the database file through the checkpointer thread, far below the
    writer's own checkpoint bound (so the event loop never waits for a checkpoint's fsync)."""
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    try:
        assert outbox._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] >= 16000
        before = path.stat().st_size
        for n in range(500):
            outbox.append(event(n))
        await wait_for(lambda: path.stat().st_size > before, timeout=10)
    finally:
        outbox.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(("stage", "commit", "read", "confirm", "restart_reader")),
            st.sampled_from(("call.ringing", "agent.presence", "cdr.created", "extension.x")),
            st.integers(1, 40),
        ),
        max_size=300,
    ),
    st.integers(100, 160),
)
def test_a_reader_keeping_up_reads_from_memory_exactly_what_is_in_the_file(
    steps: list[tuple[str, str, int]], max_events: int
) -> None:
    """The publisher's pattern (read on from the last seq taken, remove what is confirmed,
    start again from 0 after a failure), with shedding in between: every read answers what
    the file holds after that seq, whether it came from the rows just committed or a query."""
    outbox = Outbox(":memory:", max_events=max_events)
    taken = 0
    in_flight: list[int] = []
    n = 0
    for action, type_, size in steps:
        if action == "stage":
            for _ in range(size):
                outbox.stage(event(n, type_, subject=f"x{n % 3}"))
                n += 1
        elif action == "commit":
            outbox.commit()
        elif action == "read":
            rows = outbox.pending_bodies(taken, size)
            query = outbox._db.execute(
                "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (taken, size)
            ).fetchall()
            assert rows == query
            if rows:
                taken = rows[-1][0]
                in_flight += [seq for seq, _ in rows]
        elif action == "confirm":
            outbox.remove(in_flight[:size])
            del in_flight[:size]
        else:  # a failed publish: everything unconfirmed goes out again
            taken, in_flight = 0, []
