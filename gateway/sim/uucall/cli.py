"""``gateway sim uucall``: the UUCall cloud REST API on HTTP, with data that changes over time."""

from __future__ import annotations

import argparse
import asyncio

from gateway.sim.uucall.rest import AUTHS, BASE_PATH, ENVELOPES, UucallSimulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8082, help="listen port (0 = ephemeral)")
    parser.add_argument("--uid", default="10001", help="the enterprise id (uid)")
    parser.add_argument("--uid-name", default="uucall-demo", help="the enterprise name (uidName)")
    parser.add_argument("--auth", choices=AUTHS, default="header", help="credentials asked")
    parser.add_argument("--auth-header", default="Authorization", help="auth: header's name")
    parser.add_argument(
        "--token", default="sim-token", help="auth: header's value; auth: signed's token"
    )
    parser.add_argument(
        "--account-id", default="ff8080813c37da53013c804f8072007c", help="auth: signed"
    )
    parser.add_argument("--app-id", default="sim-app", help="auth: signed: the header appid")
    parser.add_argument(
        "--base-path", default=BASE_PATH, help="/rest, or the wiki's /uucall_restapi/rest"
    )
    parser.add_argument("--username", default="gateway", help="auth: basic")
    parser.add_argument("--password", default="sim-password", help="auth: basic")
    parser.add_argument(
        "--tick", type=float, default=2.0, help="data changes this often, s (0 = never)"
    )
    parser.add_argument("--rate-limit", type=float, default=50.0, help="requests/s (0 = off)")
    parser.add_argument("--burst", type=int, default=100, help="requests allowed at once")
    parser.add_argument(
        "--envelope",
        choices=ENVELOPES,
        default="bare",
        help="answers: bare, {data}, or the wiki's {Result, Code, Data} (wiki-lower: lower case)",
    )
    parser.add_argument(
        "--errors-in-body",
        action="store_true",
        help="with a wiki envelope: refusals as HTTP 200 {Result: FAILED, Code, Data}",
    )
    parser.add_argument(
        "--string-numbers", action="store_true", help="send every integer as a string"
    )
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="share of requests answered 500 (0-1)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for the changes")
    parser.add_argument("--tz", default="Asia/Shanghai", help="the service's time zone (IANA)")


async def serve(args: argparse.Namespace) -> None:
    sim = UucallSimulator(
        uid=args.uid,
        uid_name=args.uid_name,
        auth=args.auth,
        auth_header=args.auth_header,
        token=args.token,
        username=args.username,
        password=args.password,
        account_id=args.account_id,
        app_id=args.app_id,
        base_path=args.base_path,
        seed=args.seed,
        envelope=args.envelope,
        errors_in_body=args.errors_in_body,
        string_numbers=args.string_numbers,
        rate_limit=args.rate_limit,
        burst=args.burst,
        tick_s=args.tick,
        error_rate=args.error_rate,
        tz=args.tz,
    )
    await sim.start(args.host, args.port)
    credentials = {
        "header": f"header {args.auth_header}: {args.token}",
        "basic": f"basic {args.username} / {args.password}",
        "none": "none",
        "signed": f"signed account {args.account_id}, appid {args.app_id}, token {args.token}",
    }[args.auth]
    print(
        f"UUCall cloud simulator: REST on {sim.base_url}\n"
        f"  uid: {sim.uid}, uidName: {sim.uid_name}\n"
        f"  auth: {credentials}\n"
        f"  envelope: {args.envelope}{', errors in the body' if args.errors_in_body else ''}\n"
        f"  {len(sim.paths)} operations; data changes every {args.tick} s",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
