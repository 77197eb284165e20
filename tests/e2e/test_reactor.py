"""The daemon's reactor (homeserver/util/reactor.py): epoll, dispatching without Twisted's log context.

A fresh interpreter per test: which reactor is installed is process-wide state.
"""
from __future__ import annotations

import json
import select
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_ECHO = """
import json
from homeserver.cli import import_reactor
reactor = import_reactor(False)
from twisted.internet import protocol

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        if data == b"boom":
            raise ValueError("a handler bug")
        self.transport.write(data)

class Client(protocol.Protocol):
    def __init__(self, name, payload, results):
        self.name, self.payload, self.results = name, payload, results
    def connectionMade(self):
        self.transport.write(self.payload)
    def dataReceived(self, data):
        self.results[self.name] = data.decode()
        self.transport.loseConnection()
    def connectionLost(self, reason):
        self.results.setdefault(self.name, "closed")
        if len(self.results) == 2:
            reactor.stop()

results = {}
port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
for name, payload in (("bad", b"boom"), ("good", b"hello")):
    factory = protocol.ClientFactory.forProtocol(lambda n=name, p=payload: Client(n, p, results))
    reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
reactor.callLater(20, reactor.stop)
reactor.run()
print(json.dumps({"reactor": type(reactor).__name__, "results": results}))
"""


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux only; elsewhere the daemon keeps Twisted's default")
def test_daemon_reactor_serves_and_survives_a_failing_handler():
    out = subprocess.run([sys.executable, "-c", _ECHO], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["reactor"] == "LeanEPollReactor"
    # The handler that raised lost its connection; the other connection was served.
    assert result["results"] == {"bad": "closed", "good": "hello"}
