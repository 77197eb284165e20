"""The daemon's start-up memory floor: heavy libraries load when first used (docs/performance.md, "On memory").

Each test runs a fresh interpreter (what is imported is process-wide state),
so the checks see exactly what ``python -m homeserver`` would have loaded.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_BUILD = """
import json, sys, tempfile
from homeserver.cli import import_reactor, render_config
from homeserver.config import load_config
reactor = import_reactor(False)
d = tempfile.mkdtemp()
path = d + "/c.yaml"
open(path, "w").write(render_config("lazy.test", d + "/data", port=0))
from homeserver.server import HomeServer, load_or_create_signing_key
load_or_create_signing_key(d + "/data/signing.key")
hs = HomeServer(load_config(path), reactor)
LAZY = ("OpenSSL", "cryptography.x509", "h2", "autobahn", "qrcode", "PIL", "prometheus_client", "treq")
loaded = [name for name in LAZY if name in sys.modules]
"""


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _BUILD + code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_server_loads_no_heavy_library_at_start():
    result = _run("print(json.dumps({'loaded': loaded}))")
    assert result["loaded"] == []


def test_features_still_load_their_libraries_when_used():
    result = _run("""
from homeserver.groups.qr import render_qr_png
png = render_qr_png("https://lazy.test/code")
import io
from homeserver.media import thumbnailer
from PIL import Image
buf = io.BytesIO(); Image.new("RGB", (64, 32)).save(buf, "PNG"); buf.seek(0)
probe = thumbnailer.probe(buf, 10_000)
resource = hs.websocket._protocol_resource()
print(json.dumps({"png": png[:8].hex(), "probe": [probe.width, probe.height],
                  "ws": type(resource).__name__, "autobahn": "autobahn" in sys.modules}))
""")
    assert result == {"png": "89504e470d0a1a0a", "probe": [64, 32], "ws": "WebSocketResource", "autobahn": True}


def test_tls_works_after_the_reactor_was_imported_without_it():
    # The federation client's path: plain TCP wrapped with wrapClientTLS, TLS loaded on first use.
    result = _run("""
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory
from federation.tls import client_tls_creator, ensure_self_signed, server_context_factory
cert, key = d + "/t.crt", d + "/t.key"
ensure_self_signed(cert, key, "localhost")

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())

class Client(protocol.Protocol):
    def connectionMade(self):
        self.got = defer.Deferred()
        self.transport.write(b"hello over tls")
    def dataReceived(self, data):
        self.got.callback(data)

async def main():
    port = reactor.listenTCP(0, TLSMemoryBIOFactory(server_context_factory(cert, key), False,
                                                    protocol.Factory.forProtocol(Echo)), interface="127.0.0.1")
    tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
    client = await wrapClientTLS(client_tls_creator("localhost", True), tcp).connect(
        protocol.Factory.forProtocol(Client))
    data = await client.got
    client.transport.loseConnection()
    await port.stopListening()
    return data

out = []
d2 = defer.ensureDeferred(main())
d2.addBoth(lambda r: (out.append(r), reactor.stop()))
reactor.run()
print(json.dumps({"echo": out[0].decode() if isinstance(out[0], bytes) else repr(out[0]),
                  "reactor_imported_without_tls": loaded == []}))
""")
    assert result == {"echo": "HELLO OVER TLS", "reactor_imported_without_tls": True}
