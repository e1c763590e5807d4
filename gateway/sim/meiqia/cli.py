"""``gateway sim meiqia``: the unified call OpenAPI on HTTP, and a webhook sender."""

from __future__ import annotations

import argparse
import asyncio

from gateway.sim.meiqia.server import MeiqiaSimulator
from gateway.sim.meiqia.webhooks import HEADERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8090, help="listen port (0 = ephemeral)")
    parser.add_argument("--token", default="sim-meiqia-token", help="the access token to accept")
    parser.add_argument("--tz", default="Asia/Shanghai", help="the center's time zone (IANA)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for traffic")
    parser.add_argument(
        "--calls-per-second", type=float, default=0.2, help="background call rate (0 = none)"
    )
    parser.add_argument(
        "--seat-change-every", type=float, default=20.0, help="free/occupy/renew a seat, s"
    )
    parser.add_argument(
        "--record-delay", type=float, default=3.0, help="a record appears this long after its call"
    )
    parser.add_argument(
        "--burst-every", type=float, default=0.0, help="a burst of 429 answers this often, s"
    )
    parser.add_argument("--burst-size", type=int, default=3, help="requests refused per burst")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After of a 429, s")
    parser.add_argument(
        "--webhook-url",
        default=None,
        help="post signed cdr.hangup deliveries here, e.g. http://127.0.0.1:8080/webhooks/meiqia/acme",
    )
    parser.add_argument("--webhook-secret", default="sim-webhook-secret", help="the signing secret")
    parser.add_argument(
        "--bad-signatures", type=float, default=0.0, help="share of calls with a forged copy"
    )
    parser.add_argument(
        "--duplicates", type=float, default=0.0, help="share of calls delivered twice"
    )
    parser.add_argument(
        "--sign-header", default="Meiqia-Signature", choices=HEADERS, help="signature header"
    )
    parser.add_argument(
        "--chat-every",
        type=int,
        default=0,
        help="every Nth call also a chat delivery (a topic the gateway does not know; 0 = none)",
    )


async def serve(args: argparse.Namespace) -> None:
    sim = MeiqiaSimulator(
        token=args.token,
        tz=args.tz,
        seed=args.seed,
        calls_per_second=args.calls_per_second,
        seat_change_s=args.seat_change_every,
        record_delay_s=args.record_delay,
        burst_every_s=args.burst_every,
        burst_size=args.burst_size,
        burst_retry_after_s=args.retry_after,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        bad_signatures=args.bad_signatures,
        duplicates=args.duplicates,
        sign_header=args.sign_header,
        chat_every=args.chat_every,
    )
    await sim.start(args.host, args.port)
    print(
        f"Meiqia call center simulator on {sim.base_url}"
        "/unified-api/call/openapi/ent/v1/\n"
        f"  token: {sim.token}\n"
        f"  webhooks: {args.webhook_url or 'off (--webhook-url)'}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
