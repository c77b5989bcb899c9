"""A WebTransport echo server on the aioquic library (1.7.2): accepts a session at /wt
(404 elsewhere), echoes every WebTransport bidirectional stream and every datagram. Prints its
OS-chosen UDP port once bound, then logs to stderr (including the client's SETTINGS).

usage: aioquic_wt_server.py CERT KEY
"""
import asyncio, sys

from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Server(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.settings_logged = False

    def quic_event_received(self, event):
        for e in self.h3.handle_event(event):
            if isinstance(e, HeadersReceived):
                h = dict(e.headers)
                if h.get(b":method") == b"CONNECT" and h.get(b":protocol") == b"webtransport":
                    if h.get(b":path") == b"/wt":
                        log("wt session", h.get(b":path").decode())
                        self.h3.send_headers(e.stream_id, [
                            (b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")])
                    else:
                        self.h3.send_headers(e.stream_id, [(b":status", b"404")], end_stream=True)
                else:
                    self.h3.send_headers(e.stream_id, [(b":status", b"400")], end_stream=True)
            elif isinstance(e, WebTransportStreamDataReceived):
                if e.stream_id % 4 == 0:  # client-initiated bidirectional
                    self._quic.send_stream_data(e.stream_id, e.data, end_stream=e.stream_ended)
                    if e.stream_ended:
                        log("wt stream echoed", e.stream_id)
            elif isinstance(e, DatagramReceived):
                self.h3.send_datagram(e.stream_id, e.data)
                log("datagram echoed")
        if not self.settings_logged and self.h3.received_settings is not None:
            self.settings_logged = True
            log("client settings", {hex(k): v for k, v in self.h3.received_settings.items()})
        self.transmit()


async def main():
    cert, key = sys.argv[1], sys.argv[2]
    cfg = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
    cfg.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", 0, configuration=cfg, create_protocol=Server)
    print(server._transport.get_extra_info("sockname")[1], flush=True)
    await asyncio.Future()


asyncio.run(main())
