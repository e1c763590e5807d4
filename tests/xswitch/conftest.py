"""Fixtures of the XSwitch tests (the REST ones live in ``rest_fixtures``)."""

from tests.xswitch.link_fixtures import xsim
from tests.xswitch.rest_fixtures import rest_sim, xcc, xcc_http

__all__ = ["rest_sim", "xcc", "xcc_http", "xsim"]
