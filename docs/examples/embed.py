"""Run a homeserver inside your own process: .venv/bin/python docs/examples/embed.py

It starts a server on a free loopback port with its data in a temporary
directory, registers a user through the service API, fetches /versions over
HTTP like any client would, and shuts down cleanly. tests/e2e/test_daemon.py
runs this file, so it stays correct.
"""
import json
import tempfile

import treq
from twisted.internet import defer, task

from homeserver import Config, HomeServer


async def main(reactor):
    data_dir = tempfile.mkdtemp(prefix="embedded-hs-")
    config = Config.from_dict({
        "server_name": "localhost",
        "data_dir": data_dir,
        "database": {"url": f"sqlite:///{data_dir}/homeserver.db"},
        "listeners": [{"bind": "127.0.0.1", "port": 0}],   # 0: any free port
        "enable_registration": True,
    })
    hs = HomeServer(config, reactor)
    await hs.start()                 # applies migrations, starts listening
    print("serving on port", hs.ports[0])
    # Services are attributes of hs, e.g. create a user without HTTP:
    session = await hs.accounts.register("bot", "a long password")
    print("registered", session.user_id)
    # ... and the HTTP API is up for clients:
    response = await treq.get(f"http://127.0.0.1:{hs.ports[0]}/_matrix/client/versions")
    print("versions:", json.loads(await response.content())["versions"][-1])
    await hs.stop()                  # finishes in-flight requests, closes the database


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
