"""Fixtures of the UUCall tests (defined in ``fixtures``)."""

from tests.uucall.fixtures import uu, uu_http, uusim

__all__ = ["uu", "uu_http", "uusim"]
