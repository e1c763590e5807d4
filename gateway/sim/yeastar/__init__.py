"""Simulated Yeastar P-Series Software Edition (OpenAPI v1.0): HTTP API and event WebSocket."""

from gateway.sim.yeastar.cli import add_arguments, serve
from gateway.sim.yeastar.frames import EVENT_IDS, SentFrame
from gateway.sim.yeastar.server import YeastarSimulator

__all__ = ["EVENT_IDS", "SentFrame", "YeastarSimulator", "add_arguments", "serve"]
