"""Messages and relations: msgtypes, replies, edits, reactions, threads; aliases and directory."""
from __future__ import annotations

import pytest_twisted

from room_helpers import V1, V3, create, send, users

MXC = "mxc://test.local/abc"


@pytest_twisted.ensureDeferred
async def test_msgtypes_validated(hs):
    (alice,) = await users(hs, "alice")
    room = await create(alice)
    ok = [
        {"msgtype": "m.text", "body": "t", "format": "org.matrix.custom.html", "formatted_body": "<b>t</b>"},
        {"msgtype": "m.emote", "body": "waves"},
        {"msgtype": "m.notice", "body": "bot"},
        {"msgtype": "m.image", "body": "a.png", "url": MXC, "info": {"w": 1, "h": 1, "mimetype": "image/png"}},
        {"msgtype": "m.file", "body": "a.pdf", "url": MXC},
        {"msgtype": "m.audio", "body": "a.ogg", "url": MXC},
        {"msgtype": "m.video", "body": "a.mp4", "file": {"url": MXC, "key": {}, "iv": "", "hashes": {}, "v": "v2"}},
        {"msgtype": "m.location", "body": "here", "geo_uri": "geo:1,2"},
        {"msgtype": "com.example.custom", "body": "x"},
    ]
    for content in ok:
        status, resp = await send(alice, room, content=content)
        assert status == 200, (content, resp)
    bad = [
        {"msgtype": "m.text"},
        {"body": "no msgtype"},
        {"msgtype": "m.image", "body": "a.png"},
        {"msgtype": "m.image", "body": "a.png", "url": "http://x"},
        {"msgtype": "m.location", "body": "here"},
        {"msgtype": "m.text", "body": 5},
    ]
    for content in bad:
        status, resp = await send(alice, room, content=content)
        assert status == 400 and resp["errcode"] == "M_BAD_JSON", (content, resp)


@pytest_twisted.ensureDeferred
async def test_replies_edits_reactions_threads(hs):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat")
    await bob.post(f"{V3}/join/{room}")
    _, root = await send(alice, room, "root")
    root_id = root["event_id"]
    _, reply = await send(bob, room, content={"msgtype": "m.text", "body": "> root\n\nreply",
                                              "m.relates_to": {"m.in_reply_to": {"event_id": root_id}}})
    status, ev = await alice.get(f"{V3}/rooms/{room}/event/{reply['event_id']}")
    assert ev["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == root_id

    # edits: only the sender, applied in unsigned.m.relations
    edit = {"msgtype": "m.text", "body": "* root v2", "m.new_content": {"msgtype": "m.text", "body": "root v2"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": root_id}}
    status, err = await send(bob, room, content=edit)
    assert status == 400
    status, e1 = await send(alice, room, content=edit)
    assert status == 200
    status, ev = await bob.get(f"{V3}/rooms/{room}/event/{root_id}")
    assert ev["unsigned"]["m.relations"]["m.replace"]["event_id"] == e1["event_id"]
    assert ev["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"] == "root v2"

    # reactions: one per user per key
    react = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root_id, "key": "👍"}}
    status, r1 = await send(bob, room, etype="m.reaction", content=react)
    assert status == 200
    status, err = await send(bob, room, etype="m.reaction", content=react)
    assert status == 400 and err["errcode"] == "M_DUPLICATE_ANNOTATION"
    assert (await send(alice, room, etype="m.reaction", content=react))[0] == 200
    # after redacting the reaction, it may be sent again
    assert (await bob.put(f"{V3}/rooms/{room}/redact/{r1['event_id']}/x1", {}))[0] == 200
    assert (await send(bob, room, etype="m.reaction", content=react))[0] == 200

    # threads
    for i in range(3):
        status, t = await send(bob if i else alice, room, content={
            "msgtype": "m.text", "body": f"thread {i}",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root_id, "is_falling_back": True,
                             "m.in_reply_to": {"event_id": root_id}}})
        assert status == 200
    status, ev = await alice.get(f"{V3}/rooms/{room}/event/{root_id}")
    thread = ev["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 3 and thread["latest_event"]["content"]["body"] == "thread 2"
    assert thread["current_user_participated"] is True
    status, rel = await alice.get(f"{V1}/rooms/{room}/relations/{root_id}")
    assert status == 200 and len(rel["chunk"]) == 3 + 1 + 2  # threads, edit, reactions (one redacted)
    status, rel = await alice.get(f"{V1}/rooms/{room}/relations/{root_id}/m.thread", params={"limit": "2"})
    assert [e["content"]["body"] for e in rel["chunk"]] == ["thread 2", "thread 1"] and "next_batch" in rel
    status, rel2 = await alice.get(f"{V1}/rooms/{room}/relations/{root_id}/m.thread",
                                   params={"limit": "2", "from": rel["next_batch"]})
    assert [e["content"]["body"] for e in rel2["chunk"]] == ["thread 0"] and "next_batch" not in rel2
    status, rel = await alice.get(f"{V1}/rooms/{room}/relations/{root_id}/m.annotation/m.reaction")
    assert len(rel["chunk"]) == 2
    status, threads = await alice.get(f"{V1}/rooms/{room}/threads")
    assert [e["event_id"] for e in threads["chunk"]] == [root_id]
    status, threads = await bob.get(f"{V1}/rooms/{room}/threads", params={"include": "participated"})
    assert [e["event_id"] for e in threads["chunk"]] == [root_id]
    # references are bundled as a chunk of event IDs
    status, ref = await send(bob, room, content={"msgtype": "m.text", "body": "see above",
                                                 "m.relates_to": {"rel_type": "m.reference", "event_id": root_id}})
    assert status == 200
    status, ev = await alice.get(f"{V3}/rooms/{room}/event/{root_id}")
    assert ev["unsigned"]["m.relations"]["m.reference"] == {"chunk": [{"event_id": ref["event_id"]}]}
    # the bundled edit is also there when paging
    status, page = await alice.get(f"{V3}/rooms/{room}/messages", params={"dir": "b", "limit": "50"})
    root_in_page = [e for e in page["chunk"] if e["event_id"] == root_id][0]
    assert root_in_page["unsigned"]["m.relations"]["m.replace"]["event_id"] == e1["event_id"]
    assert root_in_page["unsigned"]["m.relations"]["m.thread"]["count"] == 3
    assert root_in_page["unsigned"]["m.relations"]["m.reference"] == {"chunk": [{"event_id": ref["event_id"]}]}
    # a thread cannot hang off a threaded event
    status, err = await send(alice, room, content={"msgtype": "m.text", "body": "x", "m.relates_to": {
        "rel_type": "m.thread", "event_id": t["event_id"]}})
    assert status == 400
    # non-members see nothing
    (eve,) = await users(hs, "eve")
    private = await create(alice)
    _, p = await send(alice, private, "secret")
    assert (await eve.get(f"{V1}/rooms/{private}/relations/{p['event_id']}"))[0] in (403, 404)
    assert (await eve.get(f"{V1}/rooms/{private}/threads"))[0] == 403


@pytest_twisted.ensureDeferred
async def test_aliases_directory_and_summary(hs):
    alice, bob, carol = await users(hs, "alice", "bob", "carol")
    room = await create(alice, name="Chess club", topic="Knights and rooks", preset="public_chat")
    alias = "%23chess:test.local"
    assert (await alice.put(f"{V3}/directory/room/{alias}", {"room_id": room}))[0] == 200
    status, err = await alice.put(f"{V3}/directory/room/{alias}", {"room_id": room})
    assert status == 409
    status, err = await bob.put(f"{V3}/directory/room/%23other:test.local", {"room_id": room})
    assert status == 403  # not in the room
    status, err = await alice.put(f"{V3}/directory/room/%23x:elsewhere.org", {"room_id": room})
    assert status == 400
    status, found = await bob.get(f"{V3}/directory/room/{alias}")
    assert found == {"room_id": room, "servers": ["test.local"]}
    assert (await alice.put(f"{V3}/rooms/{room}/state/m.room.canonical_alias", {"alias": "#chess:test.local"}))[0] == 200
    status, aliases = await alice.get(f"{V3}/rooms/{room}/aliases")
    assert aliases == {"aliases": ["#chess:test.local"]}
    assert (await bob.get(f"{V3}/rooms/{room}/aliases"))[0] == 403

    # directory listing
    status, vis = await bob.get(f"{V3}/directory/list/room/{room}")
    assert vis == {"visibility": "private"}
    assert (await bob.put(f"{V3}/directory/list/room/{room}", {"visibility": "public"}))[0] == 403
    assert (await alice.put(f"{V3}/directory/list/room/{room}", {"visibility": "public"}))[0] == 200
    room2 = await create(bob, name="Go club", visibility="public")
    await carol.post(f"{V3}/join/{room}")
    status, pub = await carol.get(f"{V3}/publicRooms")
    assert [c["room_id"] for c in pub["chunk"]] == [room, room2]
    assert pub["chunk"][0]["num_joined_members"] == 2 and pub["chunk"][0]["name"] == "Chess club"
    assert pub["chunk"][0]["canonical_alias"] == "#chess:test.local"
    status, page = await carol.get(f"{V3}/publicRooms", params={"limit": "1"})
    assert len(page["chunk"]) == 1 and page["next_batch"]
    status, page2 = await carol.get(f"{V3}/publicRooms", params={"limit": "1", "since": page["next_batch"]})
    assert page2["chunk"][0]["room_id"] == room2 and "prev_batch" in page2
    status, found = await carol.post(f"{V3}/publicRooms", {"filter": {"generic_search_term": "go"}})
    assert [c["room_id"] for c in found["chunk"]] == [room2]
    assert (await carol.get(f"{V3}/publicRooms", params={"since": "junk"}))[0] == 400

    # summary
    status, summary = await carol.get(f"{V1}/room_summary/{alias}")
    assert status == 200 and summary["room_id"] == room and summary["membership"] == "join"
    assert summary["room_version"] == "10" and summary["num_joined_members"] == 2
    from support import Client
    status, anon = await Client(hs).get(f"{V1}/room_summary/{room}")
    assert status == 200 and anon["room_id"] == room and "membership" not in anon
    status, anon = await Client(hs).get(f"{V3}/publicRooms")
    assert status == 200 and len(anon["chunk"]) == 2
    private = await create(alice)
    status, err = await carol.get(f"{V1}/room_summary/{private}")
    assert status == 404
    # delete alias: not by others, yes by the creator
    assert (await carol.request("DELETE", f"{V3}/directory/room/{alias}"))[0] == 403
    assert (await alice.request("DELETE", f"{V3}/directory/room/{alias}"))[0] == 200
    assert (await bob.get(f"{V3}/directory/room/{alias}"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_threads_never_list_a_root_from_another_room(hs):
    """A thread relation naming a root in another room (only a remote server could send one) stays hidden."""
    alice, bob = await users(hs, "alice", "bob")
    secret_room = await create(alice)
    status, secret = await send(alice, secret_room, "alice's secret")
    assert status == 200
    bobs_room = await create(bob)
    status, reply = await send(bob, bobs_room, "a reply")
    assert status == 200
    stored = await hs.event_store.get_event(reply["event_id"])

    def plant(txn):  # what a forged federated relation would have written
        txn.execute("INSERT INTO event_relations (room_id, event_id, relates_to_id, rel_type, event_type, sender,"
                    " aggregation_key, stream_ordering, topological_ordering) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (bobs_room, reply["event_id"], secret["event_id"], "m.thread", "m.room.message", bob.user_id,
                     None, stored.stream_ordering, stored.topological_ordering))
    await hs.db.run(plant)
    status, threads = await bob.get(f"{V1}/rooms/{bobs_room}/threads")
    assert status == 200 and threads["chunk"] == []
