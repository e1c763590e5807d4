"""The gateway command: run, sim, demo, tail, sink, normalize, send, schema, outbox drain, config
check (stable: docs/CONTRACT.md, section 3 "Command line"). `gateway COMMAND --help` shows each
command's options and defaults. `gateway run` reloads its --config file on SIGHUP and when the
file changes (docs/operating/reload.md).

exit status:
  0  done (run, sim, demo, tail, sink: stopped by SIGTERM/SIGINT or --duration)
  1  send: the command's result is a failure; any command: an internal error (a bug)
  2  bad command line, settings or config file; send: no result within --timeout; outbox
     drain: no outbox in --state-dir, or events left unconfirmed at --timeout; config check:
     a reload would refuse the file (a setting that only a restart changes)
  3  normalize: a line was rejected; send: bad --args, or no gateway takes the tenant's commands
  4  demo, send, tail, sink, outbox drain: RabbitMQ unreachable, refusing the login, or not set
     up for the gateway; sink: PostgreSQL unreachable at start
Errors are one line on stderr; --log-level DEBUG adds the traceback.

Vendors come from the registered plugins (pbx_gateway.vendors): sim, demo --vendor and
normalize --vendor offer exactly those.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from gateway.connectors.plugin import PluginError, Simulator
from gateway.logging import configure_logging
from gateway.settings import SettingsError, amqp_url_problem, load_settings, redact_url

EXIT_USAGE = 2
EXIT_REJECTED = 3
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: When this process began, for ``send --timeout`` (the whole command is bounded, not a part).
_STARTED = time.monotonic()


class UserError(Exception):
    """A failure the user can fix: one line on stderr and an exit status, no traceback."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


class _Stopped(BaseException):
    """SIGTERM/SIGINT before the event loop took the signals over (start-up)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_early(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


#: Commands that run until stopped: a signal is their normal end (exit status 0).
_SERVICES = {"run", "sim", "demo", "tail", "sink"}


def main(argv: list[str] | None = None) -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_early)
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except _Stopped as stopped:
        return 0 if _SERVICES.intersection(argv) else 128 + stopped.signum
    except BrokenPipeError:  # `gateway schema | head`: the reader has what it wanted
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str]) -> int:
    from gateway.connectors.registry import PluginError
    from gateway.demo import DemoError
    from gateway.send import SendError
    from gateway.tail import TailError

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are 2, but 3 ("bad arguments") for send
        if exc.code == EXIT_USAGE and "send" in argv and "--help" not in argv:
            return 3
        raise
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except (UserError, SendError, DemoError, TailError, PluginError) as exc:
        status = getattr(exc, "status", EXIT_USAGE)
        _fail(args, str(exc))
        return int(status)


def _fail(args: argparse.Namespace, message: str) -> None:
    """One line on stderr (a line per bad setting, each whole); the traceback too at
    ``--log-level DEBUG``."""
    if getattr(args, "log_level", None) == "DEBUG":
        traceback.print_exc()
    for line in message.splitlines() or [""]:
        print(f"gateway: {line}", file=sys.stderr, flush=True)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, every option's default shown when it says something: not
    "(default: None)", "[]" or a flag's False, nor a second time when the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_ = action.help or ""
        default = action.default
        if default is None or default is False or default == [] or "default" in help_:
            return help_
        text = super()._get_help_string(action) or ""
        if isinstance(default, str):  # a default from the environment may hold a password
            text = text.replace("%(default)s", _without_password(default).replace("%", "%%"))
        return text


def _without_password(value: str) -> str:
    """A URL's password, or a libpq ``password=`` pair's value, replaced by ``***``."""
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", redact_url(value), flags=re.IGNORECASE)


class _SimParser(argparse.ArgumentParser):
    """``gateway sim <vendor>``: the simulator's flags are added when this vendor is chosen, so
    every other command leaves the simulators unimported."""

    def __init__(self, *args: Any, simulator: Simulator | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._simulator = simulator

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        simulator, self._simulator = self._simulator, None
        if simulator is not None:
            try:
                simulator.add_arguments(self)
                self.set_defaults(handler=_cmd_sim, serve=simulator.serve)
            except PluginError as exc:
                self.error(str(exc))
        return super().parse_known_args(args, namespace)


def _parser() -> argparse.ArgumentParser:
    from gateway.connectors.registry import broken, plugins

    vendors = plugins()
    unusable = "".join(f"\n  {name}: {why}" for name, why in broken().items())
    parser = argparse.ArgumentParser(
        prog="gateway",
        description=__doc__,
        epilog=f"vendor plugins that could not be loaded:{unusable}" if unusable else None,
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=None,
        help="log level (DEBUG also prints the traceback of an error); default: run: the"
        " settings' logging.level, sim: INFO, demo: ERROR (nothing between the event lines)",
    )
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")

    def command(name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help_, description=description or help_, formatter_class=_Formatter
        )

    run = command(
        "run",
        "run the gateway service",
        "Run the gateway: HTTP first (/healthz, /readyz, /metrics, the status page at /), then"
        " RabbitMQ (retried until it answers) and the PBXs. SIGTERM/SIGINT drain in order, at"
        " any phase; a second signal forces exit.",
    )
    run.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML settings file (see config/gateway.example.yaml); without it: defaults and"
        " GATEWAY__* environment variables only, and no PBX",
    )
    run.set_defaults(handler=_cmd_run)

    sim = command("sim", "run a simulated PBX faithful to its manual")
    sim_sub = sim.add_subparsers(
        dest="vendor", required=True, metavar="VENDOR", parser_class=_SimParser
    )
    for name, plugin in vendors.items():
        if plugin.simulator is None:
            continue
        sim_sub.add_parser(
            name,
            help=f"simulated {plugin.title}",
            description=f"A simulated {plugin.title}.",
            formatter_class=_Formatter,
            simulator=plugin.simulator,
        )

    demo = command(
        "demo",
        "simulator + gateway + a consumer printing events",
        "A simulated PBX, the gateway and a consumer printing each event, in one process"
        " against RabbitMQ; prints the status page's URL first. Leaves nothing behind on the"
        " broker but the shared exchanges.",
    )
    demo.add_argument(
        "--amqp-url",
        default=os.environ.get("GATEWAY_DEMO_AMQP", DEFAULT_AMQP),
        help="RabbitMQ (environment: GATEWAY_DEMO_AMQP)",
    )
    demo.add_argument(
        "--vendor",
        default="yeastar",
        choices=sorted(n for n, p in vendors.items() if p.simulator is not None),
        help="which simulated PBX",
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument(
        "--calls-per-second", type=float, default=1.0, help="simulated background calls"
    )
    demo.add_argument("--seed", type=int, default=None, help="random seed of the traffic")
    demo.add_argument(
        "--tenant", default="demo", help="the demo PBX's tenant (not a real tenant's name)"
    )
    demo.add_argument("--json", action="store_true", help="print whole events as JSON lines")
    demo.add_argument(
        "--sim",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a simulator variant, repeatable: yeastar pbx_tz=<IANA zone> (the PBX's clock"
        " runs in another zone than the gateway is told), firmware=v1.0|newer; meiqia"
        " chat_every=N (every Nth webhook a chat topic)",
    )
    demo.set_defaults(handler=_cmd_demo)

    tail = command(
        "tail",
        "follow a running gateway's events",
        "Print the events a running gateway publishes, live, one line each as the demo prints"
        " them (or JSON lines), from a temporary queue that is gone when tail stops (Ctrl-C,"
        " exit 0). Exit status 4: RabbitMQ unreachable, refusing, or without the events"
        " exchange.",
    )
    tail.add_argument("--tenant", default="*", help="one tenant's events (*: every tenant)")
    tail.add_argument(
        "--type",
        dest="types",
        action="append",
        default=None,
        metavar="PATTERN",
        help="event types as a topic pattern, e.g. cdr.created, 'call.*', 'agent.#'"
        " (repeatable; default: every type)",
    )
    tail.add_argument("--json", action="store_true", help="print whole events as JSON lines")
    tail.add_argument(
        "--amqp-url",
        default=os.environ.get("GATEWAY__BUS__URL", DEFAULT_AMQP),
        help="RabbitMQ (environment: GATEWAY__BUS__URL)",
    )
    tail.add_argument("--exchange", default="pbx.events", help="the gateway's events exchange")
    tail.set_defaults(handler=_cmd_tail)

    sink = command(
        "sink",
        "write events into a database (reference analytics sink)",
        "Consume the gateway's events from a durable queue and write them into a database.",
    )
    sink_sub = sink.add_subparsers(dest="kind", required=True, metavar="KIND")
    postgres = sink_sub.add_parser(
        "postgres",
        help="PostgreSQL (needs the extra: pip install '.[postgres]')",
        description="CDRs (and, when bound, call.*, agent.* events; gateway.gap always) into"
        " PostgreSQL: tables created on first run and migrated, one row per event id (a"
        " redelivered copy is no second row), acked only after the commit. While PostgreSQL is"
        " away the messages wait in RabbitMQ and the sink retries with backoff, saying so on"
        " stderr. What cannot be stored goes to <queue>.dead with the reason.",
        formatter_class=_Formatter,
    )
    postgres.add_argument(
        "--dsn",
        default=os.environ.get("GATEWAY_SINK_DSN"),
        help="PostgreSQL connection string, e.g. postgresql://user@host/db"
        " (environment: GATEWAY_SINK_DSN)",
    )
    postgres.add_argument(
        "--bind",
        dest="bindings",
        action="append",
        default=None,
        metavar="KEY",
        help="routing key to consume, repeatable (default: '*.cdr.created'); e.g. also"
        " '*.call.*', '*.agent.*'",
    )
    postgres.add_argument("--queue", default="gateway.sink.postgres", help="the durable queue")
    postgres.add_argument("--schema", default="pbx", help="PostgreSQL schema of the tables")
    postgres.add_argument("--batch", type=int, default=500, help="events per transaction, at most")
    postgres.add_argument(
        "--linger-ms", type=float, default=50.0, help="wait for more events after the first"
    )
    postgres.add_argument(
        "--metrics-port", type=int, default=None, help="serve /metrics on this port"
    )
    postgres.add_argument(
        "--amqp-url",
        default=os.environ.get("GATEWAY__BUS__URL", DEFAULT_AMQP),
        help="RabbitMQ (environment: GATEWAY__BUS__URL)",
    )
    postgres.add_argument("--exchange", default="pbx.events", help="the gateway's events exchange")
    postgres.set_defaults(handler=_cmd_sink_postgres)

    send = command(
        "send",
        "publish a command and print its result",
        "Publish one command to a gateway through RabbitMQ, wait for its result, print it."
        " Exit status: 0 ok, 1 failed result, 2 no result within --timeout, 3 bad arguments"
        " (or no gateway takes the tenant's commands), 4 RabbitMQ unreachable or refusing.",
    )
    send.add_argument("tenant", help="the PBX's tenant name")
    send.add_argument("command", help="e.g. call.dial (gateway schema lists them)")
    send.add_argument("--args", default="{}", help="the command's arguments as a JSON object")
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds for the whole command (connect, publish, wait); also its AMQP expiry",
    )
    send.add_argument(
        "--amqp-url",
        default=os.environ.get("GATEWAY__BUS__URL", DEFAULT_AMQP),
        help="RabbitMQ (environment: GATEWAY__BUS__URL)",
    )
    send.add_argument("--exchange", default="pbx.commands", help="the gateway's command exchange")
    send.set_defaults(handler=_cmd_send)

    schema = command(
        "schema",
        "JSON Schema of events and commands, or AsyncAPI",
        "Print the contract as JSON Schema (a root schema per document: an event, a command),"
        " or the AsyncAPI 3.0 document; docs/ holds the committed copies.",
    )
    schema.add_argument("--asyncapi", action="store_true", help="the AsyncAPI 3.0 document")
    schema.add_argument(
        "--config",
        type=Path,
        default=None,
        help="settings whose bus.url and exchanges the AsyncAPI document names (user and"
        " password never printed); default: the defaults and GATEWAY__* environment",
    )
    schema.set_defaults(handler=_cmd_schema)

    config = command(
        "config",
        "check a configuration file before a reload",
        "Configuration files: validated as `gateway run` (and a reload) validate them.",
    )
    config_sub = config.add_subparsers(dest="config_cmd", required=True, metavar="ACTION")
    check = config_sub.add_parser(
        "check",
        help="validate a file and show what a reload would change",
        description="Validate FILE as `gateway run` would (every bad field listed, exit status"
        " 2), then print the change a reload would apply to a running instance: the PBXs added,"
        " removed and changed, and the settings that cannot change without a restart (exit"
        " status 2: a reload would refuse the file). The instance is asked over its admin"
        " listener (/config.json: fingerprints, no secret); without --against, the one FILE's"
        " http.admin names on this host. If no instance answers, the file is only validated.",
        formatter_class=_Formatter,
    )
    check.add_argument("file", type=Path, help="the YAML settings file")
    check.add_argument(
        "--against",
        default=None,
        metavar="URL",
        help="a running instance's admin URL, e.g. http://10.0.0.5:8080; without it, FILE's"
        " http.admin host and port on this host",
    )
    check.add_argument(
        "--token",
        default=None,
        help="bearer token of the admin listener: $GATEWAY_ADMIN_TOKEN, else FILE's http.admin"
        " token",
    )
    check.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the instance"
    )
    check.set_defaults(handler=_cmd_config_check)

    outbox = command(
        "outbox",
        "the event spool of an instance",
        "The durable event spool (<state_dir>/outbox.sqlite3) an instance publishes from.",
    )
    outbox_sub = outbox.add_subparsers(dest="outbox_cmd", required=True, metavar="ACTION")
    drain = outbox_sub.add_parser(
        "drain",
        help="publish the spool of an instance that will not come back",
        description="Publish every event left in an instance's spool, in order, with publisher"
        " confirms, removing each once RabbitMQ confirmed it (same event ids as the instance"
        " would publish). The instance publishes its own spool when it starts again: use this"
        " only for one that will not, and never while it runs. Prints what was published.",
        formatter_class=_Formatter,
    )
    drain.add_argument(
        "--state-dir", type=Path, required=True, help="the instance's state_dir (its volume)"
    )
    drain.add_argument(
        "--config",
        type=Path,
        default=None,
        help="settings whose bus.url and bus.events_exchange to use (default: the defaults and"
        " GATEWAY__* environment)",
    )
    drain.add_argument("--amqp-url", default=None, help="RabbitMQ, instead of bus.url")
    drain.add_argument(
        "--exchange", default=None, help="the events exchange, instead of bus.events_exchange"
    )
    drain.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole drain")
    drain.set_defaults(handler=_cmd_outbox_drain)

    norm = command(
        "normalize",
        "raw vendor messages (one per line) -> events",
        "One raw vendor message per input line, one event (JSON) per output line; rejected"
        " lines go to stderr as JSON with their line number (exit status 3).",
    )
    norm.add_argument("--vendor", required=True, choices=sorted(vendors), help="the vendor")
    norm.add_argument("--tenant", default="default", help="tenant of the events")
    norm.add_argument("--tz", default="UTC", help="the PBX's time zone (IANA name)")
    norm.add_argument("--include-raw", action="store_true", help="add the payload as data.raw")
    norm.add_argument("file", nargs="?", default="-", help="input file, - for stdin")
    norm.set_defaults(handler=_cmd_normalize)
    return parser


# --- run ---------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop takes it: reload, never exit
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        raise UserError(str(exc)) from None
    configure_logging(settings.logging.format, args.log_level or settings.logging.level)
    from gateway.app import GatewayApp, StartError

    if not settings.pbxs:
        hint = (
            "no --config given: defaults and GATEWAY__* environment only, "
            if args.config is None
            else f"{args.config} lists no PBX: "
        )
        print(
            f"gateway: {hint}no PBX configured (pbxs: in a config file, see"
            " config/gateway.example.yaml); serving HTTP and the bus only",
            file=sys.stderr,
            flush=True,
        )
    from gateway.bus.topology import TopologyMismatch

    app = GatewayApp(settings, args.config)
    try:
        return _run_until_signal(
            app.run, on_hangup=app.request_reload, event_loop=settings.loop_in_use()
        )
    except StartError as exc:
        raise UserError(str(exc)) from exc
    except (TopologyMismatch, BaseExceptionGroup) as exc:  # the broker holds other queues
        mismatch = _first_of(exc, TopologyMismatch)
        if mismatch is None:
            raise
        raise UserError(str(mismatch)) from exc


def _cmd_config_check(args: argparse.Namespace) -> int:
    from gateway.app.reload import check_against

    try:
        settings = load_settings(args.file)
    except SettingsError as exc:
        raise UserError(str(exc)) from None
    vendors = sorted({p.vendor for p in settings.pbxs})
    print(f"{args.file}: valid, {len(settings.pbxs)} PBX(s) ({', '.join(vendors) or 'none'})")
    admin = settings.http.admin
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "::", "") else admin.host
    url = args.against or f"http://{host}:{admin.port}"
    token = args.token or os.environ.get("GATEWAY_ADMIN_TOKEN") or admin.bearer()
    report, refused = check_against(settings, url, token, admin.basic(), args.timeout)
    print(report)
    return EXIT_USAGE if refused else 0


def _first_of(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first ``kind`` inside it (task groups wrap what their tasks raise)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_of(inner, kind)
            if found is not None:
                return found
    return None


def _run_until_signal(
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    on_hangup: Callable[[], None] | None = None,
    event_loop: str = "asyncio",
) -> int:
    """SIGTERM/SIGINT start an orderly drain; a second signal forces exit. SIGHUP calls
    ``on_hangup`` (run: reload the configuration). ``event_loop``: the setting of that name."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                os._exit(130)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        await work(stop)

    factory = None
    if event_loop == "uvloop":
        import uvloop  # the settings checked that it is installed

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as loop_runner:
        loop_runner.run(runner())
    return 0


# --- sim ---------------------------------------------------------------------------------------


def _cmd_sim(args: argparse.Namespace) -> int:
    configure_logging("console", args.log_level or "INFO")

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
    # Log lines go to stderr; by default only errors, so nothing lands between the event lines
    # (stopping logs expected warnings: links closed, consumers cancelled).
    if args.duration is not None and not args.duration > 0:
        raise UserError("--duration must be more than 0 seconds")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.tenant):
        raise UserError(
            f"--tenant {args.tenant!r}: letters, digits, - and _ only, at most 64"
            " (the first part of every routing key)"
        )
    configure_logging("console", args.log_level or "ERROR")
    from gateway.demo import run_demo

    async def work(stop: asyncio.Event) -> None:
        await run_demo(args, stop)

    return _run_until_signal(work)


# --- tail --------------------------------------------------------------------------------------


def _cmd_tail(args: argparse.Namespace) -> int:
    from gateway.tail import TailOptions, tail

    configure_logging("console", args.log_level or "ERROR")
    options = TailOptions(
        amqp_url=args.amqp_url,
        tenant=args.tenant,
        types=args.types or ["#"],
        json=args.json,
        exchange=args.exchange,
    )

    async def work(stop: asyncio.Event) -> None:
        await tail(options, stop)

    return _run_until_signal(work)


# --- sink --------------------------------------------------------------------------------------


def _cmd_sink_postgres(args: argparse.Namespace) -> int:
    configure_logging("console", args.log_level or "WARNING")
    try:
        import psycopg
    except ImportError:
        raise UserError(
            "the PostgreSQL sink needs psycopg: pip install 'pbx-gateway[postgres]'"
            " (from a checkout: pip install '.[postgres]')"
        ) from None
    from gateway.sink.service import PostgresSink, SinkError, SinkOptions

    if not args.dsn:
        raise UserError("--dsn (or GATEWAY_SINK_DSN) is required, e.g. postgresql://user@host/db")
    if args.batch < 1 or args.linger_ms < 0:
        raise UserError("--batch must be at least 1 and --linger-ms not negative")
    problem = amqp_url_problem(args.amqp_url)
    if problem:
        raise UserError(f"--amqp-url {redact_url(args.amqp_url)}: {problem}")
    try:
        sink = PostgresSink(
            SinkOptions(
                amqp_url=args.amqp_url,
                dsn=args.dsn,
                bindings=args.bindings or ["*.cdr.created"],
                queue=args.queue,
                schema=args.schema,
                batch=args.batch,
                linger_s=args.linger_ms / 1000,
                exchange=args.exchange,
            )
        )
    except psycopg.ProgrammingError as exc:
        raise UserError(f"--dsn: {exc}") from None
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, addr="127.0.0.1")
        except OSError as exc:
            raise UserError(f"cannot serve /metrics on port {args.metrics_port}: {exc}") from None

    async def work(stop: asyncio.Event) -> None:
        await sink.run(stop)

    try:
        return _run_until_signal(work)
    except SinkError as exc:
        raise UserError(str(exc), exc.status) from None


# --- send / schema -----------------------------------------------------------------------------


def _cmd_send(args: argparse.Namespace) -> int:
    from gateway.send import EXIT_BAD_ARGS, send_command

    configure_logging("console", args.log_level or "ERROR")
    try:
        command_args = orjson.loads(args.args)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"--args is not JSON: {exc}", EXIT_BAD_ARGS) from None
    if not isinstance(command_args, dict):
        raise UserError("--args must be a JSON object, e.g. '{\"a\": 1}'", EXIT_BAD_ARGS)
    if args.timeout <= 0:
        raise UserError("--timeout must be more than 0 seconds", EXIT_BAD_ARGS)
    code, result = asyncio.run(
        send_command(
            args.amqp_url,
            args.tenant,
            args.command,
            command_args,
            timeout_s=args.timeout,
            exchange=args.exchange,
            started_at=_STARTED,
        )
    )
    if result is None:
        print(
            f"gateway: no result within {args.timeout:g} s (is a gateway running that owns"
            f" {args.tenant!r}? its /readyz says)",
            file=sys.stderr,
        )
    else:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return code


def _cmd_schema(args: argparse.Namespace) -> int:
    from gateway.connectors.registry import command_catalog
    from gateway.schema.export import asyncapi_document, contract_json_schema

    catalog = command_catalog()
    if args.asyncapi or args.config is not None:  # a --config given is checked, even if unused
        try:
            settings = load_settings(args.config)
        except SettingsError as exc:
            raise UserError(str(exc)) from None
    if args.asyncapi:
        document = asyncapi_document(
            catalog,
            bus_url=settings.bus.url.get_secret_value(),
            events_exchange=settings.bus.events_exchange,
            commands_exchange=settings.commands.exchange,
        )
    else:
        document = contract_json_schema(catalog)
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


# --- outbox drain ------------------------------------------------------------------------------


def _cmd_outbox_drain(args: argparse.Namespace) -> int:
    from gateway.drain import DrainError, drain_outbox

    configure_logging("console", args.log_level or "WARNING")
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        raise UserError(str(exc)) from None
    if args.timeout <= 0:
        raise UserError("--timeout must be more than 0 seconds")
    url = args.amqp_url or settings.bus.url.get_secret_value()
    exchange = args.exchange or settings.bus.events_exchange
    try:
        drained = asyncio.run(drain_outbox(args.state_dir, url, exchange, timeout_s=args.timeout))
    except DrainError as exc:
        raise UserError(str(exc), exc.status) from None
    print(
        orjson.dumps(
            {
                "published": drained.published,
                "left": drained.left,
                "seconds": round(drained.seconds, 3),
                "exchange": exchange,
            }
        ).decode()
    )
    if drained.left:
        raise UserError(
            f"{drained.left} events not confirmed within {args.timeout:g} s; they stay in the"
            " spool: run again",
            EXIT_USAGE,
        )
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
    try:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    rejected = 0
    memory = StreamMemory()  # one stream: a call's later lines see what its earlier ones said
    with stream, _readable(args.file):
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


@contextlib.contextmanager
def _readable(name: str) -> Iterator[None]:
    """Input that is not UTF-8 text is a user's mistake: one line, not a traceback."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


if __name__ == "__main__":
    sys.exit(main())
