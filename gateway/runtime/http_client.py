"""The HTTP client session every PBX link shares: no cookies, and no redirect followed.

Every request a PBX link makes carries a credential (a client secret or ``dev_key`` in the
body, a token in a header or the query), and a redirect would carry it to wherever the answer
points, another origin included; so a redirect is refused, not followed. The error names the
status only: the request's URL may hold an ``access_token``."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import SimpleNamespace

import aiohttp


class RedirectRefused(aiohttp.ClientError):
    """A PBX answered a redirect; credentialed requests never follow one. Its text names no
    URL (the request's may hold a token)."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"the server answered a redirect ({status}); the gateway does not follow redirects"
            " with credentials: set the PBX's URL to where it redirects"
        )
        self.status = status


async def _refuse_redirect(
    _session: aiohttp.ClientSession,
    _context: SimpleNamespace,
    params: aiohttp.TraceRequestRedirectParams,
) -> None:
    response = params.response
    status = response.status
    response.release()
    raise RedirectRefused(status)


def no_redirects() -> aiohttp.TraceConfig:
    """A trace config that stops a request at its first redirect."""
    trace = aiohttp.TraceConfig()
    trace.on_request_redirect.append(_refuse_redirect)
    return trace


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Verifying TLS: the system's CAs, plus those of ``ca_file`` (a customer's own CA)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def pbx_session(ca_file: Path | None = None) -> aiohttp.ClientSession:
    """The session of the PBX links: no cookie jar (one session serves every PBX, and tenants
    of a SaaS vendor share a host), redirects refused; with ``ca_file``, a PBX's own session
    whose HTTPS trusts that CA too (a request that asks for the default verification gets it)."""
    connector = aiohttp.TCPConnector(ssl=tls_context(ca_file)) if ca_file else None
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trace_configs=[no_redirects()],
    )
