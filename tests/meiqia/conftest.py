"""Fixtures of the Meiqia tests (they live in ``meiqia_fixtures``)."""

from tests.meiqia.meiqia_fixtures import client, http, msim

__all__ = ["client", "http", "msim"]
