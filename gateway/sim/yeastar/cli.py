"""``gateway sim yeastar``: run the simulator until cancelled."""

from __future__ import annotations

import argparse
import asyncio

from gateway.sim.yeastar.server import YeastarSimulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``gateway sim yeastar`` (added when ``gateway sim`` runs this vendor)."""
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8088, help="listen port (0 = ephemeral)")
    parser.add_argument("--client-id", default="sim-client", help="API client ID (username)")
    parser.add_argument(
        "--client-secret", default="sim-secret", help="API client secret (password)"
    )
    parser.add_argument("--access-ttl", type=float, default=1800, help="access token TTL, s")
    parser.add_argument("--refresh-ttl", type=float, default=86400, help="refresh token TTL, s")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=60,
        help="close a WebSocket after this many silent seconds",
    )
    parser.add_argument(
        "--calls-per-second", type=float, default=1.0, help="background call rate (0 = none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for traffic")
    parser.add_argument(
        "--trap-rate",
        type=float,
        default=0.3,
        help="fraction of frames using one of the manual's inconsistencies",
    )
    parser.add_argument(
        "--tz",
        default="Asia/Shanghai",
        help="PBX time zone (IANA name); the gateway's pbxs[].timezone must say the same"
        " (config/gateway.example.yaml does)",
    )
    parser.add_argument(
        "--firmware",
        choices=("v1.0", "newer"),
        default="v1.0",
        help="v1.0: the manual's event ids only (a topic list naming a newer id is refused);"
        " newer: also 30029 and 30034-30036",
    )


async def serve(args: argparse.Namespace) -> None:
    """Start the simulator, print how to reach it once, run until cancelled."""
    sim = YeastarSimulator(
        client_id=args.client_id,
        client_secret=args.client_secret,
        access_ttl=args.access_ttl,
        refresh_ttl=args.refresh_ttl,
        idle_timeout=args.idle_timeout,
        calls_per_second=args.calls_per_second,
        seed=args.seed,
        trap_rate=args.trap_rate,
        tz=args.tz,
        firmware=args.firmware,
    )
    await sim.start(args.host, args.port)
    print(
        f"Yeastar P-Series simulator on {sim.base_url}\n"
        f"  client id: {sim.client_id}\n  client secret: {sim.client_secret}\n"
        f"  events: {sim.ws_url}?access_token=...\n"
        f"  time zone: {args.tz} (set pbxs[].timezone to it)\n"
        f"  background calls: {args.calls_per_second}/s",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
