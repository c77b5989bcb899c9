"""An independent RFC 8441 client: Python h2 (frames, HPACK, flow control) + wsproto (RFC 6455
frames). Opens several WebSockets as streams of ONE h2c connection, echoes binary wirelab
messages on each, closes each with 1000 and END_STREAM. Usage: rfc8441_client.py HOST PORT."""
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection

host, port = sys.argv[1], int(sys.argv[2])
STREAMS, MESSAGES = int(sys.argv[3]) if len(sys.argv) > 3 else 4, int(sys.argv[4]) if len(sys.argv) > 4 else 50


def msg(stream, seq, size):
    h = struct.pack(">2sBBIQQII", b"WL", 1, 0, stream, seq, time.monotonic_ns(), size, 0)
    return h + bytes((i + seq) & 0xFF for i in range(size - 32))


sock = socket.create_connection((host, port), timeout=10)
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())


def pump():
    """Reads once from the socket; returns the h2 events."""
    data = sock.recv(65536)
    if not data:
        sys.exit("connection closed by the server")
    events = conn.receive_data(data)
    out = conn.data_to_send()
    if out:
        sock.sendall(out)
    return events


enabled = False
while not enabled:
    for e in pump():
        if isinstance(e, h2.events.RemoteSettingsChanged):
            s = e.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
            if s is None or s.new_value != 1:
                sys.exit("server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL=1")
            enabled = True

sids = [conn.get_next_available_stream_id() + 2 * i for i in range(STREAMS)]
for sid in sids:
    conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                            (":path", "/ws"), (":authority", f"{host}:{port}"),
                            ("sec-websocket-version", "13")])
sock.sendall(conn.data_to_send())

ws = {sid: Connection(ConnectionType.CLIENT) for sid in sids}
status, got, partial, closed, ended = {}, {sid: [] for sid in sids}, {sid: b"" for sid in sids}, set(), set()
while len(status) < len(sids):
    for e in pump():
        if isinstance(e, h2.events.ResponseReceived):
            status[e.stream_id] = dict(e.headers)[b":status"]
assert all(v == b"200" for v in status.values()), status

sent = {sid: [msg(i, seq, 64 + 40 * i) for seq in range(MESSAGES)] for i, sid in enumerate(sids)}
for sid in sids:
    for m in sent[sid]:
        conn.send_data(sid, ws[sid].send(BytesMessage(data=m)))
sock.sendall(conn.data_to_send())

while len(closed) < len(sids) or len(ended) < len(sids):
    for e in pump():
        if isinstance(e, h2.events.DataReceived):
            conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            if not e.data or e.stream_id in closed:
                continue  # END_STREAM's empty DATA, after the close handshake
            w = ws[e.stream_id]
            w.receive_data(e.data)
            for ev in w.events():
                if isinstance(ev, BytesMessage):
                    partial[e.stream_id] += ev.data
                    if ev.message_finished:
                        got[e.stream_id].append(partial[e.stream_id])
                        partial[e.stream_id] = b""
                        if len(got[e.stream_id]) == MESSAGES:
                            conn.send_data(e.stream_id, w.send(CloseConnection(code=1000)))
                elif isinstance(ev, CloseConnection):
                    assert ev.code == 1000, ev.code
                    closed.add(e.stream_id)
                    conn.end_stream(e.stream_id)
        elif isinstance(e, h2.events.StreamEnded):
            ended.add(e.stream_id)
        elif isinstance(e, h2.events.StreamReset):
            sys.exit(f"stream {e.stream_id} was reset ({e.error_code})")
    out = conn.data_to_send()
    if out:
        sock.sendall(out)

for sid in sids:
    assert got[sid] == sent[sid], f"stream {sid}: echoes differ"
conn.close_connection()
sock.sendall(conn.data_to_send())
print(f"rfc8441 client: {STREAMS} WebSockets on one connection, {STREAMS * MESSAGES} echoes OK, "
      f"each closed with 1000 and END_STREAM both ways, no reset")
