"""Simulated PBX platforms, faithful to their manuals, for development and tests.

One package per vendor; each vendor's plugin (``gateway/connectors/<vendor>/plugin.py``) names
its simulator for ``gateway sim <vendor>`` and ``gateway demo --vendor <vendor>``.
"""
