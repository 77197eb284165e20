"""Fixtures: a real application service on loopback and a homeserver registered with it."""
from __future__ import annotations

import pytest
import pytest_twisted
import yaml
from twisted.web import server

import support
from fake_appservice import AS_TOKEN, FakeAppservice, registration


@pytest_twisted.async_yield_fixture
async def fake_as():
    from twisted.internet import reactor
    app = FakeAppservice()
    site = server.Site(app)
    site.noisy = False
    app.port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield app
    await app.port.stopListening()


@pytest.fixture
def as_config(tmp_path, database_url, fake_as):
    path = tmp_path / "wechat.yaml"
    path.write_text(yaml.safe_dump(registration(fake_as.url)))
    return support.make_config(tmp_path, database_url, app_service_config_files=[str(path)])


@pytest_twisted.async_yield_fixture
async def as_hs(as_config):
    hs = await support.start_homeserver(as_config)
    yield hs
    await hs.stop()


@pytest.fixture
def bridge(as_hs):
    """A client that speaks with the service's as_token."""
    c = support.Client(as_hs)
    c.token = AS_TOKEN
    return c
