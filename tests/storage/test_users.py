"""UserStore on both engines: users, tokens, devices, profiles."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import threads

from homeserver.storage.database import Database, apply_migrations
from homeserver.storage.users import UserStore, hash_token

A = "@alice:test.local"


@pytest_twisted.async_yield_fixture
async def store(database_url):
    from twisted.internet import reactor
    db = Database(database_url, reactor, pool_size=2)
    db.start()
    await threads.deferToThread(apply_migrations, db)
    yield UserStore(db)
    await db.close()


@pytest_twisted.ensureDeferred
async def test_users(store):
    assert await store.create_user(A, "hash", 1000, admin=True)
    assert not await store.create_user(A, "other", 2000)  # taken
    info = await store.get_user(A)
    assert (info.user_id, info.password_hash, info.creation_ts, info.admin, info.deactivated) == (A, "hash", 1000, True, False)
    assert await store.get_user("@nobody:test.local") is None
    assert await store.find_user_case_insensitive("@ALICE:test.local") == [A]
    await store.set_password_hash(A, "new")
    await store.set_admin(A, False)
    info = await store.get_user(A)
    assert info.password_hash == "new" and not info.admin
    assert await store.count_users() == 1
    # the profile starts with the localpart as display name
    assert await store.get_profile(A) == ("alice", None)


@pytest_twisted.ensureDeferred
async def test_tokens_and_devices(store):
    await store.create_user(A, "hash", 0)
    await store.upsert_device(A, "D1", "Phone", 10, "10.0.0.1")
    await store.upsert_device(A, "D1", None, 20, "10.0.0.2")  # seen again: the name stays
    await store.upsert_device(A, "D2", "Laptop", 30)
    d1 = await store.get_device(A, "D1")
    assert (d1.display_name, d1.last_seen_ts, d1.last_seen_ip) == ("Phone", 20, "10.0.0.2")
    assert [d.device_id for d in await store.get_devices(A)] == ["D1", "D2"]
    assert await store.set_device_display_name(A, "D2", "Work laptop")
    assert not await store.set_device_display_name(A, "NOPE", "x")
    assert (await store.get_device(A, "D2")).display_name == "Work laptop"

    await store.add_access_token("t1", A, "D1", 0)
    await store.add_access_token("t2", A, "D2", 0, valid_until_ms=99)
    await store.add_access_token("t3", A, None, 0)
    t2 = await store.get_token("t2")
    assert (t2.user_id, t2.device_id, t2.valid_until_ms) == (A, "D2", 99)
    assert await store.get_token("nope") is None
    # only hashes are stored
    rows = await store.db.run(lambda txn: txn.query("SELECT token_hash FROM access_tokens"))
    assert sorted(r[0] for r in rows) == sorted(hash_token(t) for t in ("t1", "t2", "t3"))

    assert await store.delete_tokens(A, ["D2"]) == [hash_token("t2")]
    assert await store.delete_tokens(A, []) == []
    assert await store.delete_tokens(A, except_token="t1") == [hash_token("t3")]
    assert await store.get_token("t1") is not None
    await store.delete_token("t1")
    assert await store.get_token("t1") is None

    await store.add_access_token("t4", A, "D1", 0)
    assert await store.delete_devices(A, ["D1", "NOPE"]) == [hash_token("t4")]
    assert await store.get_device(A, "D1") is None
    assert await store.delete_devices(A, []) == []
    assert [d.device_id for d in await store.get_devices(A)] == ["D2"]


@pytest_twisted.ensureDeferred
async def test_deactivate_and_profiles(store):
    await store.create_user(A, "hash", 0)
    await store.set_profile_field(A, "displayname", "Alice")
    await store.set_profile_field(A, "avatar_url", "mxc://x/y")
    assert await store.get_profile(A) == ("Alice", "mxc://x/y")
    with pytest.raises(ValueError):
        await store.set_profile_field(A, "admin", "1")
    await store.upsert_device(A, "D1", None, 0)
    await store.add_access_token("t1", A, "D1", 0)
    assert await store.deactivate(A) == [hash_token("t1")]
    info = await store.get_user(A)
    assert info.deactivated and info.password_hash is None
    assert await store.get_token("t1") is None
    assert await store.get_devices(A) == []
    assert await store.get_profile(A) == (None, None)
    assert await store.get_profile("@nobody:test.local") is None
