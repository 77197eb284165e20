"""Prometheus metrics per endpoint and the structured access log."""
from __future__ import annotations

import logging

import pytest_twisted
import treq

from support import Client, make_config, start_homeserver

V3 = "/_matrix/client/v3"


@pytest_twisted.ensureDeferred
async def test_metrics_count_requests_per_endpoint(tmp_path):
    hs = await start_homeserver(make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db", metrics={"enabled": True}))
    try:
        c = Client(hs)
        await c.register("alice")
        for _ in range(3):
            assert (await c.get(V3 + "/account/whoami"))[0] == 200
        await c.get(V3 + "/profile/%40nobody%3Atest.local")
        resp = await treq.get(c.base + "/metrics")
        assert resp.code == 200 and resp.headers.getRawHeaders("Content-Type")[0].startswith("text/plain")
        text = (await resp.content()).decode()
        assert ('homeserver_http_requests_total{code="200",endpoint="/_matrix/client/v3/account/whoami",'
                'method="GET"} 3.0') in text
        # templated routes are one series, whatever the path parameters
        assert 'endpoint="/_matrix/client/v3/profile/{user_id}",method="GET"} 1.0' in text
        assert ('homeserver_http_request_duration_seconds_count{endpoint="/_matrix/client/v3/account/whoami",'
                'method="GET"} 3.0') in text
        hs.sync_builder.shared.shared_count, hs.sync_builder.shared.built_count = 7, 2
        text = (await (await treq.get(c.base + "/metrics")).content()).decode()
        assert 'homeserver_sync_bodies_total{how="shared"} 7.0' in text
        assert 'homeserver_sync_bodies_total{how="built"} 2.0' in text
    finally:
        await hs.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_off_by_default(hs):
    assert (await Client(hs).get("/metrics"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_access_log_line(tmp_path, caplog):
    hs = await start_homeserver(make_config(tmp_path, f"sqlite:///{tmp_path}/hs.db", access_log=True))
    try:
        c = Client(hs)
        await c.register("alice")
        token = c.token
        with caplog.at_level(logging.INFO, logger="homeserver.access"):
            await c.get(V3 + "/account/whoami")
            await c.get(V3 + "/account/whoami", token="", params={"access_token": token})
            await c.get(V3 + "/nothing/here")
        lines = [r.getMessage() for r in caplog.records if r.name == "homeserver.access"]
        assert len(lines) == 3
        assert all(token not in line for line in lines)
        assert "GET /_matrix/client/v3/account/whoami /_matrix/client/v3/account/whoami 200" in lines[0]
        assert "user=@alice:test.local" in lines[0]
        assert "access_token=<redacted>" in lines[1] and " 200 " in lines[1]
        assert "<unmatched> 404" in lines[2] and lines[2].startswith("127.0.0.1 GET")
    finally:
        await hs.stop()
