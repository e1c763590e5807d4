"""A vendor is a plugin: one :class:`VendorPlugin` declares everything the gateway needs of it.

A plugin lives in its own package (``gateway/connectors/<name>/plugin.py`` for the built-in
ones) and is registered once, as an entry point of the group ``pbx_gateway.vendors`` in its
distribution's ``pyproject.toml``::

    [project.entry-points."pbx_gateway.vendors"]
    yeastar = "gateway.connectors.yeastar.plugin:PLUGIN"

Nothing outside the vendor's folder names it: settings, ``gateway run``, ``gateway sim``,
``gateway demo --vendor``, ``gateway normalize --vendor``, the command consumer and the web
server all read the registry (:mod:`gateway.connectors.registry`).
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from gateway.connectors.base import Connector, Emit, Spool, WebhookReceiver
from gateway.runtime.resources import SharedResources
from gateway.runtime.statestore import KeyValue
from gateway.schema.commands import BASE_COMMANDS, CommandModel, command_name
from gateway.schema.events import CloudEvent, NormalizeContext
from gateway.settings_models import PbxSettings, RecoverySettings

#: A vendor name: the ``vendor`` tag in settings and in every event, a path segment of its routes.
VENDOR_NAME = re.compile(r"^[a-z][a-z0-9_]{1,31}$")


@dataclass(frozen=True, slots=True)
class LinkResources:
    """What a connector factory is given besides its PBX's settings; it reads nothing else.

    ``store`` is this PBX's slice of the instance's state store: keys are kept apart per vendor
    and tenant (``<vendor>:<tenant>:<key>``), so the connector names only its own key.
    ``shared`` holds connections that outlive one PBX link (e.g. one NATS connection per
    server for every PBX on it); the gateway closes them at shutdown. ``http`` is shared by
    every PBX and keeps no cookies (tenants of a SaaS vendor share its host): a vendor that
    needs a cookie session opens its own. ``spool`` is the fast way in for a push link's live
    messages (see :class:`~gateway.connectors.base.Spool`); ``None`` where the events go
    elsewhere (tests, ``gateway normalize``): then use ``emit``.
    """

    http: aiohttp.ClientSession
    store: KeyValue
    recovery: RecoverySettings
    shared: SharedResources
    spool: Spool | None = None


#: ``(settings of one PBX, its resources) -> connector``; called once per configured PBX.
ConnectorFactory = Callable[[Any, LinkResources], Connector]
#: A PURE function: one raw vendor message (a text line) -> events; never raises, a payload it
#: cannot read becomes ``gateway.rejected`` (used by the connector and ``gateway normalize``).
Normalizer = Callable[[str, NormalizeContext], list[CloudEvent]]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``gateway demo`` asks of a simulator."""

    tenant: str
    calls_per_second: float
    seed: int | None
    #: The gateway's HTTP server (``http://host:port``), where a simulator that sends
    #: webhooks posts them (``/webhooks/<vendor>/...``); None when the gateway serves none.
    gateway_url: str | None = None
    #: ``gateway demo --sim KEY=VALUE``: a simulator's variant (its plugin says which keys it
    #: reads, e.g. a PBX clock in another zone than configured); unknown keys are refused.
    variants: Mapping[str, str] = field(default_factory=dict)


AddArguments = Callable[[argparse.ArgumentParser], None]
Serve = Callable[[argparse.Namespace], Awaitable[None]]
Demo = Callable[[DemoOptions], AbstractAsyncContextManager[PbxSettings]]
#: ``package.module:attribute``: where a lazily loaded simulator is found.
LAZY_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class PluginError(Exception):
    """A registered plugin cannot be loaded or declares something inconsistent."""


class Simulator(Protocol):
    """What ``gateway sim`` and ``gateway demo`` use of a vendor's simulator."""

    @property
    def add_arguments(self) -> AddArguments: ...

    @property
    def serve(self) -> Serve: ...

    @property
    def demo(self) -> Demo: ...


@dataclass(frozen=True, slots=True)
class SimulatorSpec:
    """``gateway sim <vendor>`` and ``gateway demo --vendor <vendor>``.

    ``add_arguments`` adds the vendor's flags, ``serve`` runs the simulator until cancelled;
    ``demo`` starts one on an ephemeral loopback port and yields the settings of a PBX pointing
    at it (stopping it on exit).

    A plugin names its simulator with :meth:`lazy` rather than importing it, so a process that
    only runs the gateway never loads simulator code.
    """

    add_arguments: AddArguments
    serve: Serve
    demo: Demo

    @staticmethod
    def lazy(target: str) -> LazySimulator:
        """The :class:`SimulatorSpec` at ``"package.module:attribute"``, imported on first use."""
        return LazySimulator(target)


class LazySimulator:
    """A :class:`SimulatorSpec` named by a string (as an entry point is) and imported the first
    time one of its parts is used; a target that does not load raises :class:`PluginError`."""

    __slots__ = ("_spec", "target")

    def __init__(self, target: str) -> None:
        if not LAZY_TARGET.match(target):
            raise ValueError(f"simulator {target!r} must be 'package.module:attribute'")
        self.target = target
        self._spec: SimulatorSpec | None = None

    def __repr__(self) -> str:
        return f"SimulatorSpec.lazy({self.target!r})"

    def load(self) -> SimulatorSpec:
        if self._spec is None:
            module, _, name = self.target.partition(":")
            try:
                spec = getattr(importlib.import_module(module), name)
            except Exception as exc:
                raise PluginError(f"simulator {self.target} failed to load: {exc}") from exc
            if not isinstance(spec, SimulatorSpec):
                raise PluginError(f"{self.target} is a {type(spec).__name__}, not a SimulatorSpec")
            self._spec = spec
        return self._spec

    @property
    def add_arguments(self) -> AddArguments:
        return self.load().add_arguments

    @property
    def serve(self) -> Serve:
        return self.load().serve

    @property
    def demo(self) -> Demo:
        return self.load().demo


class VendorRoutes:
    """What a plugin's HTTP handlers may use: its PBXs, the event path and the running links.

    Handlers are mounted under ``/webhooks/<name>/`` on the gateway's web server. ``emit``
    spools an event durably in the outbox (it is published with confirms, also after a broker
    outage), so a webhook may be answered 2xx as soon as ``emit`` returned. Every instance
    serves the routes, owner of the PBX or not: ``connector(tenant)`` is the running link only
    where this instance owns it.
    """

    def __init__(
        self,
        pbxs: Mapping[str, PbxSettings],
        emit: Emit,
        connector: Callable[[str], Connector | None],
    ) -> None:
        self.pbxs = pbxs
        self.emit = emit
        self.connector = connector

    def receiver(self, tenant: str) -> WebhookReceiver | None:
        """The running link of ``tenant`` where this instance owns it and it takes webhook
        deliveries (:class:`~gateway.connectors.base.WebhookReceiver`); None otherwise."""
        owner = self.connector(tenant)
        return owner if isinstance(owner, WebhookReceiver) else None


RoutesFactory = Callable[[VendorRoutes], Iterable[web.AbstractRouteDef]]


@dataclass(frozen=True, slots=True)
class VendorPlugin:
    """One vendor's declaration (see the module docstring for how it is registered).

    * ``settings``: the vendor's PBX model, a subclass of :class:`PbxSettings` whose
      ``vendor`` field is ``Literal[name]``: its member of the ``pbxs[]`` union.
    * ``connector``: builds the link of one PBX (:class:`Connector`).
    * ``normalize``: the pure normalizer behind ``gateway normalize --vendor <name>``; what
      earlier messages of the same stream showed (a call's direction ...) it keeps in
      ``ctx.memory``.
    * ``simulator``: ``gateway sim <name>`` and ``gateway demo --vendor <name>``, best named
      with ``SimulatorSpec.lazy("<module>:<attribute>")`` so only those commands import it.
    * ``commands``: the command names the vendor executes; every other command is answered
      ``unsupported`` without reaching the vendor. Shared names come from the contract
      (``call.dial`` ...); the vendor's own management commands are named ``<name>.<...>``
      and their models listed in ``command_models``.
    * ``routes``: HTTP handlers (webhooks), mounted under ``/webhooks/<name>/``.
    """

    name: str
    title: str
    settings: type[PbxSettings]
    connector: ConnectorFactory
    normalize: Normalizer
    simulator: Simulator | None = None
    commands: frozenset[str] = frozenset()
    command_models: tuple[type[CommandModel], ...] = ()
    routes: RoutesFactory | None = None

    def check(self) -> None:
        """Raise ``ValueError`` when the declaration is inconsistent (checked at load)."""
        if not VENDOR_NAME.match(self.name):
            raise ValueError(f"vendor name {self.name!r} must match {VENDOR_NAME.pattern}")
        if not (isinstance(self.settings, type) and issubclass(self.settings, PbxSettings)):
            raise ValueError(f"settings must be a subclass of PbxSettings, not {self.settings!r}")
        tag = self.settings.model_fields.get("vendor")
        if tag is None or getattr(tag.annotation, "__args__", None) != (self.name,):
            raise ValueError(f"{self.settings.__name__}.vendor must be Literal[{self.name!r}]")
        own = {command_name(model) for model in self.command_models}
        foreign = sorted(n for n in own if not n.startswith(f"{self.name}."))
        if foreign:
            raise ValueError(f"vendor commands must be named {self.name}.<...>: {foreign}")
        undeclared = sorted(own - self.commands)
        if undeclared:
            raise ValueError(f"modelled but not in commands (would be unsupported): {undeclared}")
        unknown = sorted(self.commands - set(BASE_COMMANDS) - own)
        if unknown:
            raise ValueError(f"commands neither in the contract nor modelled: {unknown}")
