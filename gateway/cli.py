"""The ``gateway`` command: run, sim, demo, normalize, send, schema (docs/CONTRACT.md section 3).

Vendors come from the registered plugins (``pbx_gateway.vendors``): ``sim``, ``demo --vendor``
and ``normalize --vendor`` offer exactly those.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from gateway.logging import configure_logging
from gateway.settings import SettingsError, load_settings

EXIT_REJECTED = 3


def main(argv: list[str] | None = None) -> int:
    from gateway.connectors.registry import PluginError

    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except PluginError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    from gateway.connectors.registry import broken, plugins

    vendors = plugins()
    unusable = "".join(f"\n  {name}: {why}" for name, why in broken().items())
    parser = argparse.ArgumentParser(
        prog="gateway",
        description=__doc__,
        epilog=f"vendor plugins that could not be loaded:{unusable}" if unusable else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd")

    run = sub.add_parser("run", help="run the gateway service")
    run.add_argument("--config", type=Path, default=None, help="YAML settings file")
    run.set_defaults(handler=_cmd_run)

    sim = sub.add_parser("sim", help="run a simulated PBX faithful to its manual")
    sim_sub = sim.add_subparsers(dest="vendor", required=True)
    for name, plugin in vendors.items():
        if plugin.simulator is None:
            continue
        vendor_parser = sim_sub.add_parser(name, help=f"simulated {plugin.title}")
        plugin.simulator.add_arguments(vendor_parser)
        vendor_parser.set_defaults(handler=_cmd_sim, serve=plugin.simulator.serve)

    demo = sub.add_parser("demo", help="simulator + gateway + a consumer printing events")
    demo.add_argument(
        "--amqp-url",
        default=os.environ.get("GATEWAY_DEMO_AMQP", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    demo.add_argument(
        "--vendor",
        default="yeastar",
        choices=sorted(n for n, p in vendors.items() if p.simulator is not None),
        help="which simulated PBX (default: yeastar)",
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--calls-per-second", type=float, default=1.0)
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument("--tenant", default="demo")
    demo.add_argument("--json", action="store_true", help="print whole events as JSON lines")
    demo.set_defaults(handler=_cmd_demo)

    send = sub.add_parser("send", help="publish a command and print its result")
    send.add_argument("tenant")
    send.add_argument("command", help="e.g. call.dial")
    send.add_argument("--args", default="{}", help="the command's arguments as a JSON object")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (and expiry)")
    send.add_argument(
        "--amqp-url",
        default=os.environ.get("GATEWAY__BUS__URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    send.add_argument("--exchange", default="pbx.commands")
    send.set_defaults(handler=_cmd_send)

    schema = sub.add_parser("schema", help="JSON Schema of events and commands, or AsyncAPI")
    schema.add_argument("--asyncapi", action="store_true")
    schema.set_defaults(handler=_cmd_schema)

    norm = sub.add_parser("normalize", help="raw vendor messages (one per line) -> events")
    norm.add_argument("--vendor", required=True, choices=sorted(vendors))
    norm.add_argument("--tenant", default="default")
    norm.add_argument("--tz", default="UTC")
    norm.add_argument("--include-raw", action="store_true")
    norm.add_argument("file", nargs="?", default="-")
    norm.set_defaults(handler=_cmd_normalize)
    return parser


# --- run ---------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(settings.logging.format, settings.logging.level)
    from gateway.app import GatewayApp

    return _run_until_signal(lambda stop: GatewayApp(settings).run(stop))


def _run_until_signal(work: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    """SIGTERM/SIGINT start an orderly drain; a second signal forces exit."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                os._exit(130)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await work(stop)

    asyncio.run(runner())
    return 0


# --- sim ---------------------------------------------------------------------------------------


def _cmd_sim(args: argparse.Namespace) -> int:
    configure_logging("console", "INFO")
    async def work(stop: asyncio.Event) -> None:
        task = asyncio.create_task(args.serve(args), name="simulator")
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        waiter.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)

    return _run_until_signal(work)


# --- demo --------------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    configure_logging("console", "WARNING")
    from gateway.demo import run_demo

    async def work(stop: asyncio.Event) -> None:
        await run_demo(args, stop)

    return _run_until_signal(work)


# --- send / schema -----------------------------------------------------------------------------


def _cmd_send(args: argparse.Namespace) -> int:
    from gateway.send import EXIT_TIMEOUT, send_command

    try:
        command_args = orjson.loads(args.args)
    except orjson.JSONDecodeError as exc:
        print(f"--args is not JSON: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT + 1
    code, result = asyncio.run(
        send_command(
            args.amqp_url,
            args.tenant,
            args.command,
            command_args,
            timeout_s=args.timeout,
            exchange=args.exchange,
        )
    )
    if result is None:
        print(f"no result within {args.timeout} s", file=sys.stderr)
    else:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return code


def _cmd_schema(args: argparse.Namespace) -> int:
    from gateway.connectors.registry import command_catalog
    from gateway.schema.export import asyncapi_document, contract_json_schema

    catalog = command_catalog()
    document = asyncapi_document(catalog) if args.asyncapi else contract_json_schema(catalog)
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


# --- normalize ---------------------------------------------------------------------------------


def _cmd_normalize(args: argparse.Namespace) -> int:
    from gateway.connectors.registry import plugin
    from gateway.schema.events import NormalizeContext, StreamMemory

    normalize = plugin(args.vendor).normalize
    try:
        zone = ZoneInfo(args.tz)
    except Exception:
        print(orjson.dumps({"error": f"unknown time zone {args.tz!r}"}).decode(), file=sys.stderr)
        return 2
    stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    rejected = 0
    memory = StreamMemory()  # one stream: a call's later lines see what its earlier ones said
    with stream:
        for number, line in enumerate(stream, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            ctx = NormalizeContext(
                args.tenant, args.vendor, zone, datetime.now(UTC), args.include_raw, memory
            )
            for event in normalize(line, ctx):
                if event.type == "gateway.rejected":
                    rejected += 1
                    error = {"line": number, "error": event.data.get("error"), "text": line[:500]}
                    print(orjson.dumps(error).decode(), file=sys.stderr)
                else:
                    sys.stdout.write(event.to_json().decode() + "\n")
    return EXIT_REJECTED if rejected else 0


if __name__ == "__main__":
    sys.exit(main())
