"""Simulated PBX platforms, faithful to their manuals, for development and tests.

Each vendor package exposes ``add_arguments(parser)`` and ``async serve(args)`` for
``gateway sim <vendor>``; ``SIMULATORS`` maps the vendor name to that module (imported lazily).
"""

SIMULATORS: dict[str, str] = {"yeastar": "gateway.sim.yeastar"}
