# examples/embed.py — run with: .venv/bin/python docs/examples/embed.py
from twisted.internet import defer, reactor, task

from homeserver import Config, HomeServer


async def main(reactor):
    config = Config.from_dict({
        "server_name": "localhost",
        "data_dir": "/tmp/embedded-hs",
        "database": {"url": "sqlite:////tmp/embedded-hs/homeserver.db"},
        "listeners": [{"bind": "127.0.0.1", "port": 8008}],
        "enable_registration": True,
    })
    hs = HomeServer(config, reactor)
    await hs.start()                 # applies migrations, starts listening
    print("serving on port", hs.ports[0])
    # Services are attributes of hs, e.g. create a user without HTTP:
    session = await hs.accounts.register("bot", "a long password")
    print("registered", session.user_id)
    await task.deferLater(reactor, 1.0, lambda: None)
    await hs.stop()                  # finishes in-flight requests, closes the database


task.react(lambda r: defer.ensureDeferred(main(r)))
