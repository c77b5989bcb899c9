"""An independent RFC 8441 server: hypercorn (h2c prior knowledge, SETTINGS_ENABLE_CONNECT_PROTOCOL)
with an ASGI WebSocket echo. Binds 127.0.0.1 on an OS-chosen port, prints it, then serves until
killed. Usage: hypercorn_echo.py"""
import asyncio
import socket
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            ev = await receive()
            if ev["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif ev["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    print(f"websocket over HTTP/{scope['http_version']}", file=sys.stderr, flush=True)
    while True:
        ev = await receive()
        if ev["type"] == "websocket.receive":
            await send({"type": "websocket.send", "bytes": ev.get("bytes"), "text": ev.get("text")})
        else:
            return


sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(128)
print(sock.getsockname()[1], flush=True)
config = Config()
config.bind = [f"fd://{sock.fileno()}"]
config.loglevel = "WARNING"
asyncio.run(serve(app, config))
