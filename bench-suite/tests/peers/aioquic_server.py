"""aioquic's example HTTP/3 server (examples/http3_server.py from the aioquic sdist, demo app
with POST /echo), started on an OS-chosen UDP port that is printed once it is bound.

usage: aioquic_server.py EXAMPLES_DIR CERT KEY
"""
import os, runpy, sys

examples, cert, key = sys.argv[1:4]
sys.path.insert(0, examples)
os.chdir(examples)  # the demo app finds its templates and htdocs relative to here

import aioquic.asyncio as aq

_serve = aq.serve


async def serve(*args, **kwargs):
    server = await _serve(*args, **kwargs)
    print(server._transport.get_extra_info("sockname")[1], flush=True)
    return server


aq.serve = serve
sys.argv = ["http3_server.py", "--certificate", cert, "--private-key", key,
            "--host", "127.0.0.1", "--port", "0"]
runpy.run_path(os.path.join(examples, "http3_server.py"), run_name="__main__")
