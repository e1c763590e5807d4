"""The simulated Meiqia's webhook sender: a signed ``cdr.hangup`` delivery when a call ends.

As Meiqia's Webhooks help page shows: a JSON ``POST`` of ``{"id": "sub_<enterprise>_<time>_<n>",
"event": "cdr.hangup", "enterprise_token", "created_at": <Unix seconds>, "cdr": {...}}`` (the
``Cdr`` with the fields of a ``records`` record), signed with the SHA-1 of the body followed by
the secret, in ``Meiqia-Signature`` (``sign_header``: or ``Meiqia-Sign`` as the page's example
request, or ``both``). A delivery answered 5xx or not at all is sent again (up to ``retries``
times, honouring ``Retry-After`` up to 2 s); a 4xx is final.

``chat_every`` (every n-th call, a delivery the gateway knows no topic of, taking turns: a
chat topic in the envelope, its data under ``conversation`` as the help page's chat example
puts it (the topic name is the simulator's), and Meiqia's SDK chat push, the message shape of
Meiqia/MeiqiaSDK-Push-Signature-Example's sample.txt with no ``id`` or ``event``, signed in
``Authorization: meiqia_sign:...``).

Switches: ``bad_signatures`` (share of calls for which a forged copy with a wrong signature is
sent first), ``duplicates`` (share of calls delivered twice: the same delivery again, or the
same call under a new delivery id), ``drop_every`` (every n-th call's delivery is lost).
``stats`` counts what was sent and how it was answered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import time
from collections import Counter
from typing import Any, Final, Literal

import aiohttp
import orjson

from gateway.logging import get_logger

log = get_logger("sim.meiqia.webhooks")

SignatureKind = Literal["good", "bad", "none"]
HEADERS: Final = ("Meiqia-Signature", "Meiqia-Sign", "both")
#: The simulator's name for a chat topic (the help page names none the gateway knows).
CHAT_TOPIC: Final = "conversation.message"


def sign(body: bytes, secret: str) -> str:
    return hashlib.sha1(body + secret.encode("utf-8")).hexdigest()


def sdk_sign(body: bytes, secret: str) -> str:
    """The SDK push's ``Authorization``: ``meiqia_sign:`` + base64(hex HMAC-SHA1)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).hexdigest()
    return "meiqia_sign:" + base64.b64encode(digest.encode("ascii")).decode("ascii")


class WebhookSender:
    """Posts deliveries to ``url`` (none: sends nothing) in the order calls end."""

    def __init__(
        self,
        url: str | None,
        secret: str | None,
        *,
        enterprise: str,
        rng: random.Random,
        bad_signatures: float = 0.0,
        duplicates: float = 0.0,
        sign_header: str = "Meiqia-Signature",
        retries: int = 3,
        drop_every: int = 0,
        chat_every: int = 0,
    ) -> None:
        if sign_header not in HEADERS:
            raise ValueError(f"sign_header must be one of {', '.join(HEADERS)}")
        self.url = url
        self.chat_every = chat_every
        self.secret = secret or ""
        self.enterprise = enterprise
        self.rng = rng
        self.bad_signatures = bad_signatures
        self.duplicates = duplicates
        self.sign_header = sign_header
        self.retries = retries
        self.drop_every = drop_every
        #: sent (every POST), deliveries (distinct ids), calls, dropped, forged, same_id_again,
        #: new_id_again, retried, and one ``status_<code>`` per answer.
        self.stats: Counter[str] = Counter()
        self._serial = 0
        self._waiting = 0
        #: The call_uuids whose delivery was lost (``drop_every``).
        self.dropped: list[str] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="meiqia-sim-webhooks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def target(self, url: str) -> None:
        """Send to ``url`` from now on (e.g. once the gateway's port is known)."""
        self.url = url
        await self.start()

    def idle(self) -> bool:
        """Nothing waits to be sent (for tests)."""
        return self._waiting == 0

    # --- deliveries ----------------------------------------------------------------------------

    def envelope(self, record: dict[str, Any], topic: str = "cdr.hangup") -> dict[str, Any]:
        """A new delivery of ``record`` (a new id each time)."""
        self._serial += 1
        now = int(time.time())
        return {
            "id": f"sub_{self.enterprise}_{now}_{self._serial}",
            "event": topic,
            "enterprise_token": self.enterprise,
            "created_at": now,
            "cdr": dict(record),
        }

    def call_ended(self, record: dict[str, Any]) -> None:
        """Queue the call's ``cdr.hangup`` (and, by the switches, a forged copy or a repeat)."""
        if not self.enabled:
            return
        self._waiting += 1
        self._queue.put_nowait(record)

    async def _run(self) -> None:
        while True:
            record = await self._queue.get()
            try:
                await self._deliver_call(record)
            except Exception as exc:  # the sender must outlive one bad delivery
                log.warning("webhook_failed", error=f"{type(exc).__name__}: {exc}")
            finally:
                self._waiting -= 1

    async def _deliver_call(self, record: dict[str, Any]) -> None:
        self.stats["calls"] += 1
        if self.drop_every and self.stats["calls"] % self.drop_every == 0:
            self.stats["dropped"] += 1  # lost on the way: only polling will see this call
            self.dropped.append(str(record.get("call_uuid")))
            return
        envelope = self.envelope(record)
        body = orjson.dumps(envelope)
        if self.rng.random() < self.bad_signatures:
            self.stats["forged"] += 1
            await self.post(body, "bad")
        self.stats["deliveries"] += 1
        await self.post(body, "good", retry=True)
        if self.chat_every and self.stats["calls"] % self.chat_every == 0:
            await self._deliver_chat()
        if self.rng.random() < self.duplicates:
            if self.rng.random() < 0.5:
                self.stats["same_id_again"] += 1
                await self.post(body, "good", retry=True)
            else:
                self.stats["new_id_again"] += 1
                self.stats["deliveries"] += 1
                await self.post(orjson.dumps(self.envelope(record)), "good", retry=True)

    async def _deliver_chat(self) -> None:
        """A topic the gateway does not know, taking turns between the two shapes."""
        self.stats["chats"] += 1
        now = int(time.time())
        if self.stats["chats"] % 2:
            self._serial += 1
            body = orjson.dumps(
                {
                    "id": f"sub_{self.enterprise}_{now}_{self._serial}",
                    "event": CHAT_TOPIC,
                    "enterprise_token": self.enterprise,
                    "created_at": now,
                    "conversation": {"id": self._serial, "content": "test", "from": "client"},
                }
            )
            await self.post(body, "good", retry=True)
            return
        body = orjson.dumps(
            {
                "clientId": f"sim{self._serial:08d}",
                "content": "test",
                "contentType": "text",
                "deviceOS": "Android",
                "fromName": "美洽",
                "messageId": str(now),
                "messageTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000", time.gmtime(now)),
            }
        )
        await self.post(body, "good", header="Authorization", retry=True)

    def headers(
        self, body: bytes, kind: SignatureKind, header: str | None = None
    ) -> dict[str, str]:
        header = header or self.sign_header
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if kind == "none":
            return headers
        if header == "Authorization":
            secret = self.secret if kind == "good" else self.secret + "x"
            headers["Authorization"] = sdk_sign(body, secret)
            return headers
        value = sign(body, self.secret) if kind == "good" else sign(body, self.secret + "x")
        if header in ("Meiqia-Signature", "both"):
            headers["Meiqia-Signature"] = value
        if header in ("Meiqia-Sign", "both"):
            headers["Meiqia-Sign"] = value if header == "Meiqia-Sign" else sign(body, "other")
        return headers

    async def post(
        self,
        body: bytes,
        kind: SignatureKind = "good",
        *,
        header: str | None = None,
        retry: bool = False,
        url: str | None = None,
    ) -> int:
        """POST one body; the final HTTP status (0: no answer at all)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        target = url or self.url
        if not target:
            raise RuntimeError("no webhook url")
        status = 0
        for attempt in range(self.retries + 1 if retry else 1):
            if attempt:
                self.stats["retried"] += 1
            self.stats["sent"] += 1
            wait = 0.2 * (attempt + 1)
            try:
                async with self._session.post(
                    target,
                    data=body,
                    headers=self.headers(body, kind, header),
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    status = resp.status
                    await resp.read()
                    after = resp.headers.get("Retry-After", "")
                    if after.isdigit():
                        wait = min(float(after), 2.0)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            self.stats[f"status_{status}"] += 1
            if 200 <= status < 500 and status != 0:
                return status
            await asyncio.sleep(wait)
        return status
