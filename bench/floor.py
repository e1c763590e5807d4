"""The least relay the gateway's own libraries allow: the floor its CPU per event is judged by.

It does what any bridge from a Yeastar PBX to RabbitMQ must do and nothing more: take a token,
subscribe over the WebSocket (``websockets``, as the gateway), and for each frame decode it and
publish its ``msg`` (persistent, publisher confirms, as the gateway) with ``aiormq`` (the client
under aio-pika), each frame on its own as it arrives. No normalizer, no spool, no watermark, no
metrics, no logging. ``bench/suite.py --only latency --floor`` runs it beside the gateway, on the
same fake PBX and consumer, so both are measured in the same minutes.

Usage: ``python bench/floor.py BASE_URL CLIENT_ID CLIENT_SECRET AMQP_URL EXCHANGE TENANT [LOOP]``
(``LOOP``: ``asyncio``, the default, or ``uvloop``, as the gateway's ``event_loop`` setting).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import aiormq
import orjson
import websockets
from pamqp.commands import Basic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the gateway of this tree
from gateway.connectors.yeastar.client import API_PATH

BENCH_TOPICS = [30011]


async def token(base_url: str, username: str, password: str) -> str:
    async with aiohttp.ClientSession() as session:
        url = f"{base_url}{API_PATH}/get_token"
        async with session.post(url, json={"username": username, "password": password}) as resp:
            body = await resp.json(content_type=None)
    return str(body["access_token"])


async def relay(
    base_url: str, username: str, password: str, amqp_url: str, exchange: str, tenant: str
) -> None:
    access = await token(base_url, username, password)
    connection = await aiormq.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    in_flight: set[asyncio.Future[object]] = set()

    def publish(kind: str, body: bytes) -> None:
        properties = Basic.Properties(delivery_mode=2, message_type=kind)
        sent = asyncio.ensure_future(
            channel.basic_publish(
                body, exchange=exchange, routing_key=f"{tenant}.{kind}", properties=properties
            )
        )
        in_flight.add(sent)
        sent.add_done_callback(in_flight.discard)

    host = base_url.split("://", 1)[1]
    url = f"ws://{host}{API_PATH}/subscribe?access_token={access}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with websockets.connect(url, ping_interval=None, max_queue=128) as ws:
        await ws.send(orjson.dumps({"topic_list": BENCH_TOPICS}).decode())
        await ws.recv()  # the PBX's answer to the topic list
        publish("gateway.connection", b'{"data":{"state":"connected"}}')

        async def read() -> None:
            async for message in ws:
                frame = orjson.loads(message)
                if "type" not in frame:  # an answer, not an event
                    continue
                publish("call.answered", orjson.dumps(orjson.loads(frame["msg"])))

        reader = asyncio.create_task(read())
        await stop.wait()
        reader.cancel()
    await asyncio.gather(*in_flight, return_exceptions=True)
    await connection.close()


def main() -> None:
    if len(sys.argv) > 7 and sys.argv[7] == "uvloop":
        import uvloop

        uvloop.run(relay(*sys.argv[1:7]))
    else:
        asyncio.run(relay(*sys.argv[1:7]))


if __name__ == "__main__":
    main()
