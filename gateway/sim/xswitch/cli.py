"""``gateway sim xswitch``: the REST API on HTTP and a node publishing calls on NATS."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Callable

from gateway.sim.xswitch.controller import BusinessController
from gateway.sim.xswitch.rest import XccRestSimulator
from gateway.sim.xswitch.traffic import XccNodeSimulator


class XSwitchSimulator:
    """Both halves of one simulated XCC system, started and stopped together."""

    def __init__(
        self,
        *,
        nats_url: str = "nats://127.0.0.1:4222",
        prefix: str | None = None,
        command_prefix: str | None = None,
        dev_key: str | None = None,
        token_ttl_s: float = 3600.0,
        calls_per_second: float = 0.0,
        config_change_s: float = 0.0,
        seed: int | None = None,
        tz: str = "Asia/Shanghai",
        talk_s: tuple[int, int] = (5, 90),
        controller: bool = True,
        on_accept: Callable[[str], None] | None = None,
    ) -> None:
        # A prefix of its own keeps one simulator's calls away from every other listener of a
        # shared NATS server (``from-<tenant>.`` is XCC's multi-tenant form).
        self.prefix = f"from-sim{secrets.token_hex(4)}." if prefix is None else prefix
        # ... and its node's own command subjects: two simulators both listening on
        # ``cn.xswitch.node.<node-uuid>`` would both answer (and act on) every request.
        self.command_prefix = (
            command_prefix_for(self.prefix) if command_prefix is None else command_prefix
        )
        self.dev_key = dev_key or secrets.token_hex(16)
        self.nats_url = nats_url
        self.rest = XccRestSimulator(self.dev_key, token_ttl_s=token_ttl_s, seed=seed)
        self.config_change_s = config_change_s
        self.node = XccNodeSimulator(
            nats_url,
            prefix=self.prefix,
            command_prefix=self.command_prefix,
            calls_per_second=calls_per_second,
            seed=seed,
            tz=tz,
            talk_s=talk_s,
        )
        # A business controller beside the gateway, accepting every other call.
        self.controller = (
            BusinessController(
                nats_url,
                prefix=self.prefix,
                command_prefix=self.command_prefix,
                on_accept=on_accept,
            )
            if controller
            else None
        )
        if self.controller is not None:
            self.node.accept_wait_s = 0.5

    @property
    def base_url(self) -> str:
        return self.rest.base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.rest.start(host, port)
        if self.config_change_s > 0:
            self.rest.start_mutations(self.config_change_s)
        try:
            await self.node.start()
            if self.controller is not None:
                await self.controller.start()
        except BaseException:
            await self.node.stop()
            await self.rest.stop()
            raise

    async def stop(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
        await self.node.stop()
        await self.rest.stop()


def command_prefix_for(prefix: str) -> str:
    """XCC's multi-tenant pair: a node publishing under ``from-<tenant>.`` takes requests under
    ``to-<tenant>.``; without a ``from-`` prefix, requests go to the bare subjects."""
    return "to-" + prefix.removeprefix("from-") if prefix.startswith("from-") else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="REST listen address")
    parser.add_argument("--port", type=int, default=8081, help="REST listen port (0 = ephemeral)")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="NATS server")
    parser.add_argument(
        "--prefix", default="", help="subject prefix, e.g. 'from-acme.' (multi-tenant XCC)"
    )
    parser.add_argument(
        "--command-prefix",
        default=None,
        help="prefix of the node's request subjects, e.g. 'to-acme.' (default: 'to-<tenant>.'"
        " for a 'from-<tenant>.' prefix, else none)",
    )
    parser.add_argument("--dev-key", default="sim-dev-key", help="the developer key to accept")
    parser.add_argument("--token-ttl", type=float, default=3600, help="user token lifetime, s")
    parser.add_argument(
        "--calls-per-second", type=float, default=0.5, help="background call rate (0 = none)"
    )
    parser.add_argument(
        "--config-change-every",
        type=float,
        default=30.0,
        help="change an extension/queue/IVR/hotline this often, s (0 = never)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for traffic")
    parser.add_argument("--tz", default="Asia/Shanghai", help="the node's time zone (IANA)")


async def serve(args: argparse.Namespace) -> None:
    sim = XSwitchSimulator(
        nats_url=args.nats_url,
        prefix=args.prefix,
        command_prefix=args.command_prefix,
        dev_key=args.dev_key,
        token_ttl_s=args.token_ttl,
        calls_per_second=args.calls_per_second,
        config_change_s=args.config_change_every,
        seed=args.seed,
        tz=args.tz,
    )
    await sim.start(args.host, args.port)
    print(
        f"XSwitch XCC simulator: REST on {sim.base_url}, events on {args.nats_url}\n"
        f"  dev_key: {sim.dev_key}\n"
        f"  subjects: {sim.prefix}cn.xswitch.ctrl, {sim.prefix}cn.xswitch.ctrl.event.cdr,"
        f" {sim.prefix}cn.xswitch.cdr\n"
        f"  node requests: {sim.command_prefix}cn.xswitch.node.{sim.node.node_uuid}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
