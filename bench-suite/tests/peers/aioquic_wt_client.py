"""A WebTransport client on the aioquic library (1.7.2): opens a session (extended CONNECT,
`:protocol webtransport`) to our wt server, echoes a file of length-prefixed service messages
over one WebTransport bidirectional stream, and datagrams. Prints one JSON object: the server's
SETTINGS as received, the CONNECT response, and what came back.

usage: aioquic_wt_client.py HOST PORT CA_PEM MESSAGES_FILE

aioquic's H3Connection does not handle data on a WebTransport bidirectional stream the client
itself opened (it takes it for a response), so this client reads those bytes at the QUIC layer.
"""
import asyncio, json, ssl, sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived

BOUND = 20.0


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.changed = asyncio.Event()
        self.headers = {}
        self.wt = {}  # stream id -> [bytes, ended]
        self.datagrams = []

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id in self.wt:
            buf = self.wt[event.stream_id]
            buf[0] += event.data
            buf[1] = buf[1] or event.end_stream
        else:
            for e in self.h3.handle_event(event):
                if isinstance(e, HeadersReceived):
                    self.headers[e.stream_id] = e.headers
                elif isinstance(e, DatagramReceived):
                    self.datagrams.append(e.data)
        self.changed.set()

    async def until(self, cond):
        async def wait():
            while not cond():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), BOUND)


async def main():
    host, port, ca, messages = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    data = open(messages, "rb").read()
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536,
                            server_name="localhost")
    cfg.load_verify_locations(ca)
    out = {}
    async with connect(host, port, configuration=cfg, create_protocol=Client) as c:
        await c.until(lambda: c.h3.received_settings is not None)
        out["settings"] = {hex(k): v for k, v in c.h3.received_settings.items()}
        session = c._quic.get_next_available_stream_id()
        c.h3.send_headers(session, [
            (b":method", b"CONNECT"), (b":scheme", b"https"), (b":protocol", b"webtransport"),
            (b":authority", f"localhost:{port}".encode()), (b":path", b"/wt"),
            (b"origin", b"https://localhost"),
        ])
        c.transmit()
        await c.until(lambda: session in c.headers)
        out["response"] = {k.decode(): v.decode() for k, v in c.headers[session]}
        if out["response"].get(":status") != "200":
            print(json.dumps(out))
            return 1
        # One bidirectional WebTransport stream: every message, then FIN; the echo ends too.
        sid = c.h3.create_webtransport_stream(session, is_unidirectional=False)
        c.wt[sid] = [b"", False]
        c._quic.send_stream_data(sid, data, end_stream=True)
        c.transmit()
        await c.until(lambda: c.wt[sid][1])
        out["stream_sent"] = len(data)
        out["stream_echo_equal"] = c.wt[sid][0] == data
        # Datagrams: unreliable, so each is sent up to 5 times until its echo is seen.
        back = 0
        for i in range(20):
            payload = b"datagram-%03d" % i
            for _ in range(5):
                c.h3.send_datagram(session, payload)
                c.transmit()
                try:
                    await asyncio.wait_for(c.until(lambda: payload in c.datagrams), 1.0)
                    back += 1
                    break
                except asyncio.TimeoutError:
                    pass
        out["datagrams_echoed"] = back
        c.close()
    print(json.dumps(out))
    return 0 if out["stream_echo_equal"] and back == 20 else 1


sys.exit(asyncio.run(main()))
