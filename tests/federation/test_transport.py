"""Two homeservers over real TLS on loopback: keys, notary, X-Matrix, transactions."""
from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from federation.transport.auth import sign_request
from federation.transport.client import FederationRequestError, HttpResponseError
from fedsupport import start_federating


@pytest_twisted.async_yield_fixture
async def pair(tmp_path, db_url_for):
    a = await start_federating(tmp_path, db_url_for("a"), "a")
    b = await start_federating(tmp_path, db_url_for("b"), "b")
    yield a, b
    await a.stop()
    await b.stop()


@pytest_twisted.ensureDeferred
async def test_keys_and_notary(pair):
    a, b = pair
    keys = await b.federation_client.get_json(a.server_name, "/_matrix/key/v2/server")
    assert keys["server_name"] == a.server_name and a.own_keys.key_id in keys["verify_keys"]
    assert keys["valid_until_ts"] > b.clock.time_msec()
    # B's keyring fetches and caches A's key.
    vk = await b.keyring.get_verify_key(a.server_name, a.own_keys.key_id)
    assert vk is not None and vk.encode() == a.signing_key.verify_key.encode()
    # A as notary for B's keys: fetched, then served with both signatures.
    result = await b.federation_client.post_json(
        a.server_name, "/_matrix/key/v2/query", {"server_keys": {b.server_name: {}}})
    (resp,) = result["server_keys"]
    assert resp["server_name"] == b.server_name
    assert set(resp["signatures"]) == {a.server_name, b.server_name}
    result = await b.federation_client.get_json(a.server_name, f"/_matrix/key/v2/query/{b.server_name}")
    assert result["server_keys"][0]["verify_keys"] == resp["verify_keys"]


@pytest_twisted.ensureDeferred
async def test_transaction_edus_and_idempotency(pair):
    a, b = pair
    seen = []

    async def on_test_edu(origin, content):
        seen.append((origin, content))

    # m.typing & co. are taken by the sync services (federation/edus.py): use a private type.
    a.federation_edus.register_edu_handler("org.example.test", on_test_edu)
    txn = {"origin": b.server_name, "origin_server_ts": 1, "pdus": [],
           "edus": [{"edu_type": "org.example.test", "content": {"room_id": "!r:x", "user_id": "@u:x"}},
                    {"edu_type": "m.unknown", "content": {}}]}
    path = "/_matrix/federation/v1/send/t1"
    first = await b.federation_client.put_json(a.server_name, path, txn)
    again = await b.federation_client.put_json(a.server_name, path, txn)
    assert first == again == {"pdus": {}}
    assert seen == [(b.server_name, txn["edus"][0]["content"])]
    with pytest.raises(HttpResponseError) as e:
        await b.federation_client.put_json(a.server_name, "/_matrix/federation/v1/send/t2",
                                           {**txn, "edus": txn["edus"] * 51})
    assert e.value.code == 400
    with pytest.raises(HttpResponseError) as e:
        await b.federation_client.put_json(a.server_name, "/_matrix/federation/v1/send/t3",
                                           {**txn, "origin": "evil.example"})
    assert e.value.code == 403


async def _raw_put(hs, path, body, auth):
    import json

    import treq

    headers = {"Content-Type": ["application/json"]}
    if auth is not None:
        headers["Authorization"] = [auth]
    from twisted.internet import reactor
    from twisted.web.client import Agent

    agent = Agent(reactor, contextFactory=_Insecure())
    resp = await treq.request("PUT", f"https://127.0.0.1:{hs.federation_port}{path}".encode(),
                              data=json.dumps(body).encode(), headers=headers, agent=agent)
    return resp.code, json.loads(await resp.content())


@implementer(IPolicyForHTTPS)
class _Insecure:
    def creatorForNetloc(self, hostname, port):  # noqa: N802
        from federation.tls import client_tls_creator

        return client_tls_creator(hostname.decode(), insecure=True)


@pytest_twisted.ensureDeferred
async def test_unauthenticated_requests_are_refused(pair):
    a, b = pair
    path = "/_matrix/federation/v1/send/x1"
    body = {"pdus": [], "edus": []}
    assert (await _raw_put(a, path, body, None))[0] == 401
    assert (await _raw_put(a, path, body, "X-Matrix garbage"))[0] == 401
    good = sign_request(b.server_name, b.signing_key, a.server_name, "PUT", path, body)
    code, resp = await _raw_put(a, path, body, good)
    assert code == 200, resp
    # Signed for another destination, for another body, or by a key that isn't B's.
    wrong_dest = sign_request(b.server_name, b.signing_key, "other.example", "PUT", path, body)
    code, resp = await _raw_put(a, path, body, wrong_dest)
    assert (code, resp["errcode"]) == (401, "M_UNAUTHORIZED")
    assert (await _raw_put(a, path, {"pdus": [], "edus": [{}]}, good))[0] == 401
    forged = sign_request(b.server_name, a.signing_key, a.server_name, "PUT", path, body)
    assert (await _raw_put(a, path, body, forged))[0] == 401


@pytest_twisted.ensureDeferred
async def test_sender_queues_while_down_and_catches_up(tmp_path, db_url_for):
    from fedsupport import federation_config
    from support import start_homeserver

    a_config = federation_config(tmp_path, db_url_for("a"), "a")
    a = await start_homeserver(a_config)
    b = await start_federating(tmp_path, db_url_for("b"), "b")
    try:
        await b.keyring.get_verify_key(a.server_name, a.own_keys.key_id)
        await a.stop()
        pdu = {"room_id": "!nowhere:" + b.server_name, "event_id": "$" + uuid.uuid4().hex, "type": "m.x"}
        await b.federation_sender.send_pdu(pdu["room_id"], pdu, [a.server_name])
        state = None
        for _ in range(100):
            state = await b.federation_sender._destinations.get(a.server_name)
            if state is not None:
                break
            await b.clock.sleep(0.05)
        assert state is not None and state.retry_interval_ms > 0
        assert await b.federation_sender._outbox.peek(a.server_name, 10)
        # A comes back (same data dir, same port) and contacts B: B's queue wakes and delivers.
        a = await start_homeserver(a_config)
        with pytest.raises(FederationRequestError):
            await a.federation_client.get_json(b.server_name, "/_matrix/federation/v1/nope")
        for _ in range(200):
            if not await b.federation_sender._outbox.peek(a.server_name, 10):
                break
            await b.clock.sleep(0.05)
        assert not await b.federation_sender._outbox.peek(a.server_name, 10)
        rows = await a.db.run(lambda txn: txn.query("SELECT response_json FROM federation_received_txns"))
        assert any(pdu["event_id"] in r[0] for r in rows)
        assert (await b.federation_sender._destinations.get(a.server_name)).retry_interval_ms == 0
    finally:
        await a.stop()
        await b.stop()
