"""An RFC 9220 (WebSocket over HTTP/3) client on aioquic's H3Connection: connects to HOST:PORT,
waits for the server's SETTINGS, sends an extended CONNECT with `:protocol websocket` on one
request stream, and prints one JSON line saying what the server did:

  {"enable_connect_protocol": <SETTINGS_ENABLE_CONNECT_PROTOCOL value or null>,
   "outcome": "status 200" | "status NNN" | "reset 0xNNN" | "closed 0xNNN ..."}

usage: rfc9220_client.py HOST PORT CA_PEM
"""
import asyncio, json, ssl, sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset

ENABLE_CONNECT_PROTOCOL = 0x8


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.outcome = asyncio.get_running_loop().create_future()
        self.settings = asyncio.get_running_loop().create_future()

    def decide(self, what):
        if not self.outcome.done():
            self.outcome.set_result(what)

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            self.decide(f"reset {event.error_code:#x}")
        elif isinstance(event, ConnectionTerminated):
            self.decide(f"closed {event.error_code:#x} {event.reason_phrase}")
        for e in self.h3.handle_event(event):
            if isinstance(e, HeadersReceived):
                status = dict(e.headers).get(b":status", b"?").decode()
                self.decide(f"status {status}")
        if self.h3.received_settings is not None and not self.settings.done():
            self.settings.set_result(dict(self.h3.received_settings))


async def main(host, port, ca):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    cfg.load_verify_locations(ca)
    async with connect(host, int(port), configuration=cfg, create_protocol=Client) as c:
        settings = await asyncio.wait_for(c.settings, 10)
        sid = c._quic.get_next_available_stream_id()
        c.h3.send_headers(sid, [
            (b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
            (b":authority", f"localhost:{port}".encode()), (b":path", b"/ws"),
            (b"sec-websocket-version", b"13"),
        ])
        c.transmit()
        outcome = await asyncio.wait_for(c.outcome, 10)
        print(json.dumps({"enable_connect_protocol": settings.get(ENABLE_CONNECT_PROTOCOL),
                          "outcome": outcome}), flush=True)


asyncio.run(main(*sys.argv[1:4]))
