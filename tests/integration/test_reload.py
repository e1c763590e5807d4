"""Reload: PBXs come and go while the gateway runs, every other PBX left as it is."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
import yaml
from prometheus_client import REGISTRY

from gateway import cli
from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings
from tests.integration.process import GatewayProcess
from tests.integration.reloading import config_doc, pbx_doc, reloading_gateway, write_config
from tests.yeastar.test_yeastar_events import account

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def link_events(collected: Any, since: int = 0) -> list[dict[str, Any]]:
    return [
        e for e in collected.events[since:] if e["type"] in ("gateway.connection", "gateway.gap")
    ]


async def test_bad_files_change_nothing_and_say_why(
    sim_factory, collector, unique, tmp_path, capsys
) -> None:
    sim = await sim_factory(calls_per_second=2)
    tenant = f"r{unique}"
    collected = await collector(tenant)
    config = tmp_path / "gateway.yaml"
    good = config_doc([pbx_doc(pbx_settings(sim, tenant))], tmp_path / "state", http=True)
    write_config(config, good)
    async with reloading_gateway(config) as app:
        await wait_for(lambda: app.owned == {tenant} and app.status()["ready"], timeout=15)
        await wait_for(lambda: collected.of_type("gateway.connection"), timeout=10)
        reloader = app.reloader
        assert reloader is not None
        connections, tokens = sim.connections_total, sim.token_requests
        seen = len(collected.events)
        bad_pbx = pbx_doc(
            pbx_settings(sim, f"{tenant}-b"), base_url="not a url", heartbeat_interval_s=-1
        )
        cases: list[tuple[str, str | dict[str, Any], list[str]]] = [
            ("not YAML", "pbxs: [\n  - {tenant: x\n", ["not valid YAML", "line"]),
            (
                "unknown vendor",
                {**good, "pbxs": [*good["pbxs"], {"tenant": "x", "vendor": "nope"}]},
                ["pbxs.1.vendor", "nope"],
            ),
            (
                "duplicate tenant",
                {**good, "pbxs": [*good["pbxs"], good["pbxs"][0]]},
                ["unique", tenant],
            ),
            (
                "PBX failing validation",
                {**good, "pbxs": [*good["pbxs"], bad_pbx]},
                ["pbxs.1.base_url", "pbxs.1.heartbeat_interval_s"],
            ),
            (
                "setting read at start",
                {**good, "state_dir": str(tmp_path / "elsewhere"), "shutdown_timeout_s": 3},
                ["state_dir", "shutdown_timeout_s", "restart"],
            ),
        ]
        for n, (case, content, words) in enumerate(cases, start=1):
            if isinstance(content, str):
                fresh = config.with_suffix(".new")
                fresh.write_text(content)
                fresh.replace(config)
            else:
                write_config(config, content)
            await wait_for(lambda n=n: reloader.record.reloads == n, timeout=10)
            record = reloader.record
            assert record.last_ok is False, case
            assert record.generation == 1, case
            for word in words:
                assert word in (record.last_error or ""), (case, record.last_error)
            status = app.status()["config"]
            assert status["last_reload"]["ok"] is False and status["last_reload"]["error"]
            assert metric("gateway_config_last_reload_success") == 0
            assert app.owned == {tenant}
        # the running PBX never noticed
        assert (sim.connections_total, sim.token_requests) == (connections, tokens)
        assert link_events(collected, seen) == []
        assert app.status()["ready"]

        # back to a good file (a PBX changed): applied, generation 2
        write_config(
            config, {**good, "pbxs": [pbx_doc(pbx_settings(sim, tenant), include_raw=False)]}
        )
        await wait_for(lambda: reloader.record.generation == 2, timeout=10)
        assert reloader.record.last_ok and reloader.record.last_changes == {
            "added": [],
            "removed": [],
            "changed": [tenant],
            "unchanged": 0,
        }
        assert metric("gateway_config_last_reload_success") == 1
        assert metric("gateway_config_generation") == 2

        # `gateway config check` against the running instance: every bad field, exit 2 ...
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**good, "pbxs": [*good["pbxs"], bad_pbx]}))
        assert cli._main(["config", "check", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "pbxs.1.base_url" in err and "pbxs.1.heartbeat_interval_s" in err
        # ... and the diff it would apply
        assert app.web is not None
        url = f"http://127.0.0.1:{app.web.port}"
        other = await sim_factory()
        candidate = tmp_path / "next.yaml"
        candidate.write_text(
            yaml.safe_dump({**good, "pbxs": [pbx_doc(pbx_settings(other, f"{tenant}-new"))]})
        )
        assert (
            await asyncio.to_thread(
                cli._main, ["config", "check", str(candidate), "--against", url]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert f"added: {tenant}-new" in out and f"removed: {tenant}" in out
        candidate.write_text(yaml.safe_dump({**good, "state_dir": str(tmp_path / "moved")}))
        assert (
            await asyncio.to_thread(
                cli._main, ["config", "check", str(candidate), "--against", url]
            )
            == 2
        )
        out = capsys.readouterr().out
        assert "refused" in out and "state_dir" in out and "restart" in out
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/config.json") as resp:
                served = await resp.text()
        assert sim.client_secret not in served and tenant in served


async def test_reload_storm_applies_the_last_version_once(sim_factory, unique, tmp_path) -> None:
    sims = [await sim_factory() for _ in range(3)]
    tenants = [f"s{unique}-{n}" for n in range(3)]
    docs = [pbx_doc(pbx_settings(s, t)) for s, t in zip(sims, tenants, strict=True)]
    config = tmp_path / "gateway.yaml"
    write_config(config, config_doc(docs[:1], tmp_path / "state"))
    async with reloading_gateway(config, poll_s=0.05, settle_s=0.3) as app:
        assert app.reloader is not None
        await wait_for(lambda: app.owned == {tenants[0]}, timeout=15)
        started = time.monotonic()
        for n in range(100):  # 100 versions in about a second, alternating 2 and 3 PBXs
            write_config(config, config_doc(docs[: 2 + n % 2], tmp_path / "state"))
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 3
        await wait_for(lambda: app.reloader.record.reloads == 1, timeout=10)
        await asyncio.sleep(1.0)  # (nothing else may come: the file is still)
        assert app.reloader.record.reloads == 1
        assert app.reloader.record.last_changes == {
            "added": tenants[1:3] if 99 % 2 else tenants[1:2],
            "removed": [],
            "changed": [],
            "unchanged": 1,
        }
        await wait_for(lambda: app.owned == set(tenants[: 2 + 99 % 2]), timeout=10)


async def test_fifty_pbxs_add_five_remove_five_rotate_one(
    sim_factory, collector, command_bus, amqp, unique, tmp_path
) -> None:
    """50 Yeastar PBXs with traffic; one reload adds 5, removes 5 and rotates the secret (a
    ``client_secret_file``) of 1: the 44 others keep their link, token and commands."""
    names = [f"f{unique}-{n:02d}" for n in range(55)]
    sims = {t: await sim_factory(calls_per_second=0.4, seed=n) for n, t in enumerate(names)}
    collected = {t: await collector(t) for t in names}
    before, after = names[:50], [*names[:45], *names[50:]]
    removed, added, rotated = names[45:50], names[50:], names[0]
    untouched = [t for t in before if t in after and t != rotated]
    # 50 running, 5 removed and 1 changed: 44 untouched (the 39 of "50 in all, 5 of them new")
    assert (len(untouched), len(removed), len(added)) == (44, 5, 5)
    secret = tmp_path / "rotated.secret"
    secret.write_text(sims[rotated].client_secret)

    def doc(tenant: str) -> dict[str, Any]:
        pbx = pbx_settings(sims[tenant], tenant)
        if tenant == rotated:
            return pbx_doc(pbx, client_secret=None, client_secret_file=str(secret))
        return pbx_doc(pbx)

    def write(tenants: list[str]) -> None:
        pbxs = [doc(t) for t in tenants]
        write_config(config, config_doc(pbxs, tmp_path / "state", commands=command_bus.exchange))

    config = tmp_path / "gateway.yaml"
    write(before)
    async with reloading_gateway(config) as app:
        assert app.reloader is not None and app.ownership is not None
        ownership = app.ownership

        def connected(tenants: list[str]) -> bool:
            return app.owned == set(tenants) and all(
                ownership.connectors[t].health()["state"] == "connected" for t in tenants
            )

        await wait_for(lambda: connected(before), timeout=40)
        await wait_for(lambda: all(collected[t].of_type("gateway.connection") for t in before))
        await asyncio.sleep(1.0)  # traffic flowing on every link
        marks = {t: len(collected[t].events) for t in names}
        links = {t: (sims[t].connections_total, sims[t].token_requests) for t in names}

        # one reload: 5 added, 5 removed, 1 secret rotated (at the PBX and in the file)
        sims[rotated].client_secret = f"rotated-{unique}"
        secret.write_text(sims[rotated].client_secret)
        write(after)
        changed_at = time.monotonic()
        await wait_for(lambda: app.reloader.record.generation == 2, timeout=15)
        assert app.reloader.record.last_changes == {
            "added": added,
            "removed": removed,
            "changed": [rotated],
            "unchanged": len(untouched),
        }
        first_event: dict[str, float] = {}  # any event: the link's gateway.connection
        first_vendor_event: dict[str, float] = {}  # a call placed on the PBX once linked

        async def call_when_linked(tenant: str) -> None:
            await wait_for(lambda: collected[tenant].of_type("gateway.connection"), timeout=15)
            await sims[tenant].run_call()

        calls = [asyncio.create_task(call_when_linked(t)) for t in added]

        def new_ones_published() -> bool:
            now = time.monotonic() - changed_at
            for t in added:
                if t not in first_event and collected[t].events:
                    first_event[t] = now
                if t not in first_vendor_event and any(
                    e.get("vendorevent") for e in collected[t].events
                ):
                    first_vendor_event[t] = now
            return len(first_vendor_event) == len(added)

        await wait_for(new_ones_published, timeout=15, interval=0.01)
        await asyncio.gather(*calls)
        await wait_for(lambda: connected(after), timeout=15)
        await asyncio.sleep(1.5)  # traffic keeps flowing after the reload

        # removed: link closed, queue gone (a command for them finds no gateway)
        for t in removed:
            assert sims[t].stats()["connections"] == 0, t
            channel = await amqp.channel()
            with pytest.raises(aio_pika.exceptions.ChannelClosed):
                await channel.declare_queue(f"{command_bus.exchange}.{t}", passive=True)
        # an untouched PBX's commands are still taken (its consumer never moved)
        result = await command_bus.call(untouched[0], "call.query", {"direction": "internal"})
        assert result["ok"], result
        disturbed = {t: link_events(collected[t], marks[t]) for t in untouched}
        reconnected = [
            t for t in untouched if (sims[t].connections_total, sims[t].token_requests) != links[t]
        ]
        # the PBXs stop sending: every frame each untouched PBX sent is counted, once
        await asyncio.gather(*(sim.stop() for sim in sims.values()))
        with contextlib.suppress(TimeoutError):
            await wait_for(
                lambda: all(account(sims[t], collected[t])["lost"] == 0 for t in untouched),
                timeout=15,
            )
        totals: Counter[str] = Counter()
        short = {}
        for t in untouched:
            counts = account(sims[t], collected[t])
            totals.update({k: counts[k] for k in ("sent", "lost", "duplicates")})
            if counts["lost"] or counts["duplicates"]:
                short[t] = counts
    figures = {
        "untouched_links_disturbed": sum(1 for events in disturbed.values() if events),
        "untouched_reconnected": len(reconnected),
        "frames_sent": totals["sent"],
        "lost": totals["lost"],
        "duplicates": totals["duplicates"],
        "first_event_s": sorted(round(s, 2) for s in first_event.values()),
        "first_vendor_event_s": sorted(round(s, 2) for s in first_vendor_event.values()),
    }
    print("reload figures:", orjson.dumps(figures).decode())  # the reload page quotes them
    assert figures["untouched_links_disturbed"] == 0, disturbed
    assert reconnected == []
    assert totals["lost"] == 0 and totals["duplicates"] == 0, short
    assert max(first_event.values()) < 5.0, first_event
    assert max(first_vendor_event.values()) < 5.0, first_vendor_event
    assert sims[rotated].connections_total > links[rotated][0]
    assert sims[rotated].token_requests > links[rotated][1]


async def test_two_instances_reloaded_apart_own_a_new_pbx_once(
    sim_factory, command_bus, amqp, unique, tmp_path
) -> None:
    """Each instance reloads its own file, a few seconds apart (two versions of the file for a
    while): the new PBX is owned by one instance at a time, never two; removed the same way, it
    is dropped by its owner, taken by the instance still listing it, and retired by the last."""
    tenants = [f"d{unique}-{n}" for n in range(3)]
    sims = {t: await sim_factory() for t in tenants}
    docs = {t: pbx_doc(pbx_settings(sims[t], t)) for t in tenants}
    new = tenants[2]

    def write(name: str, listed: list[str]) -> None:
        write_config(
            tmp_path / f"{name}.yaml",
            config_doc(
                [docs[t] for t in listed],
                tmp_path / name,
                commands=command_bus.exchange,
                instance=f"{name}-{unique}",
            ),
        )

    for name in ("a", "b"):
        write(name, tenants[:2])
    owners_seen: list[set[str]] = []
    async with (
        reloading_gateway(tmp_path / "a.yaml") as a,
        reloading_gateway(tmp_path / "b.yaml") as b,
    ):
        apps = {"a": a, "b": b}

        def owners(tenant: str) -> set[str]:
            return {name for name, app in apps.items() if tenant in app.owned}

        sampling = True

        async def sample() -> None:
            while sampling:
                owners_seen.append(owners(new))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        await wait_for(lambda: all(len(owners(t)) == 1 for t in tenants[:2]), timeout=20)
        write("a", tenants)  # a has the new PBX ...
        await wait_for(lambda: owners(new) == {"a"}, timeout=10)
        await asyncio.sleep(2.0)
        write("b", tenants)  # ... and b, two seconds later
        await wait_for(lambda: b.reloader is not None and b.reloader.record.generation == 2)
        await asyncio.sleep(3.0)  # a hand-over to b, if the spread wants one, happens here
        assert len(owners(new)) == 1
        assert all(new in app.leases.tenants for app in apps.values() if app.leases)
        holder = next(iter(owners(new)))
        other = "b" if holder == "a" else "a"

        write(holder, tenants[:2])  # removed from the holder's file first: the other takes it
        await wait_for(lambda: owners(new) == {other}, timeout=10)
        write(other, tenants[:2])  # and from the other's: nobody runs it, its queue is retired
        await wait_for(lambda: owners(new) == set(), timeout=10)
        await wait_for(
            lambda: all(
                app.reloader and app.reloader.record.generation == 3 for app in apps.values()
            )
        )
        sampling = False
        await sampler
        channel = await amqp.channel()
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            await channel.declare_queue(f"{command_bus.exchange}.{new}", passive=True)
    assert max(len(seen) for seen in owners_seen) == 1
    assert sum(1 for seen in owners_seen if seen) > 0


async def test_removed_pbx_answers_its_waiting_commands(
    sim_factory, command_bus, unique, tmp_path
) -> None:
    """Commands waiting for a PBX whose link is down are answered ``not_found`` when the PBX
    is removed, and its queue goes."""
    up, down = await sim_factory(), await sim_factory()
    tenants = {"up": f"w{unique}-up", "down": f"w{unique}-down"}
    docs = {
        "up": pbx_doc(pbx_settings(up, tenants["up"])),
        "down": pbx_doc(pbx_settings(down, tenants["down"])),
    }
    await down.stop()  # its link never comes up: its commands wait in the queue
    config = tmp_path / "gateway.yaml"
    state = tmp_path / "state"
    write_config(config, config_doc(list(docs.values()), state, commands=command_bus.exchange))
    async with reloading_gateway(config) as app:
        await wait_for(lambda: app.owned == set(tenants.values()), timeout=15)
        waiting = [
            await command_bus.publish(tenants["down"], "call.query", {"direction": "internal"})
            for _ in range(3)
        ]
        write_config(config, config_doc([docs["up"]], state, commands=command_bus.exchange))
        for command_id in waiting:
            result = await command_bus.result(command_id, timeout=15)
            assert not result["ok"] and result["error"]["code"] == "not_found", result
            assert "removed from the gateway's configuration" in result["error"]["message"]
        assert app.owned == {tenants["up"]}
        assert (
            metric(
                "gateway_commands_total",
                tenant=tenants["down"],
                vendor="yeastar",
                command="call.query",
                outcome="not_found",
            )
            == 3
        )


async def test_sighup_reloads_gateway_run(sim_factory, unique, tmp_path) -> None:
    """`gateway run`: SIGHUP reads the file again (never stops the process)."""
    sims = [await sim_factory(), await sim_factory()]
    tenants = [f"h{unique}-{n}" for n in range(2)]
    docs = [pbx_doc(pbx_settings(s, t)) for s, t in zip(sims, tenants, strict=True)]
    config = tmp_path / "gateway.yaml"
    doc = config_doc(docs[:1], tmp_path / "state", http=True)
    doc["logging"] = {"format": "json", "level": "INFO"}
    write_config(config, doc)
    gateway = await GatewayProcess.start(config)
    try:
        async with aiohttp.ClientSession() as http:

            async def status() -> dict[str, Any]:
                url = f"http://127.0.0.1:{gateway.http_port}/status.json"
                async with http.get(url) as resp:
                    return dict(await resp.json())

            await wait_for(lambda: '"lease_acquired"' in gateway.text, timeout=15)
            gateway.proc.send_signal(signal.SIGHUP)  # same file: applied, nothing changes
            await wait_for(lambda: '"config_reloaded"' in gateway.text, timeout=10)
            assert (await status())["config"]["generation"] == 2
            # a change while the watch is slow to see it: SIGHUP applies it now
            doc["pbxs"] = docs
            config.write_text(yaml.safe_dump(doc))
            gateway.proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: gateway.text.count('"config_reloaded"') >= 2, timeout=10)
            body = await status()
            assert body["config"]["generation"] == 3 and body["config"]["last_reload"]["ok"]
            assert body["config"]["last_reload"]["changes"]["added"] == tenants[1:]
            await wait_for(lambda: tenants[1] in gateway.text, timeout=10)
            assert gateway.proc.returncode is None
    finally:
        assert await gateway.stop() == 0


async def test_a_pbx_moved_by_reload_never_runs_a_command_twice(
    sim_factory, command_bus, unique, tmp_path
) -> None:
    """A PBX moves from one instance to another by reloads (added to a's file, removed from
    b's): a learns from the shared ledger what b executed, so a command delivered again with
    the same id is answered without calling the PBX a second time."""
    sims = {t: await sim_factory() for t in (f"m{unique}-0", f"m{unique}-x")}
    base, moved = list(sims)
    docs = {t: pbx_doc(pbx_settings(sims[t], t)) for t in sims}

    def write(name: str, listed: list[str]) -> None:
        write_config(
            tmp_path / f"{name}.yaml",
            config_doc(
                [docs[t] for t in listed],
                tmp_path / name,
                commands=command_bus.exchange,
                instance=f"{name}-{unique}",
            ),
        )

    write("a", [base])
    write("b", [base, moved])
    async with (
        reloading_gateway(tmp_path / "a.yaml") as a,
        reloading_gateway(tmp_path / "b.yaml") as b,
    ):
        await wait_for(lambda: moved in b.owned, timeout=20)
        assert b.ownership is not None
        await wait_for(lambda: b.ownership.connectors[moved].health()["state"] == "connected")
        dial = {"caller": "2001", "callee": "2002"}
        first = await command_bus.call(moved, "call.dial", dial, command_id=f"dial-{unique}")
        assert first["ok"], first
        assert sims[moved].control_calls["call/dial"] == 1

        write("a", [base, moved])
        await wait_for(lambda: a.reloader is not None and a.reloader.record.generation == 2)
        write("b", [base])
        await wait_for(lambda: moved in a.owned and moved not in b.owned, timeout=20)
        assert a.ownership is not None
        await wait_for(lambda: a.ownership.connectors[moved].health()["state"] == "connected")
        command_bus.results.pop(f"dial-{unique}", None)
        again = await command_bus.call(moved, "call.dial", dial, command_id=f"dial-{unique}")
        assert again["ok"] == first["ok"], again
        assert sims[moved].control_calls["call/dial"] == 1  # not dialled twice
