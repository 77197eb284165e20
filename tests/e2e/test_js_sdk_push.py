"""matrix-js-sdk (as under Element) reaches PREPARED against this server, with push rules and counts.

matrix-js-sdk fetches /pushrules/ before its first /sync and does not start
without them. Needs Node 20+ and npm (the package is installed into
tests/e2e/js on first use, from the pinned package-lock.json); skipped when
either is missing.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet import utils

from room_helpers import V3, create, send, users
from support import base_url

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def _ensure_sdk() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the matrix-js-sdk check")
    if os.path.isdir(os.path.join(JS_DIR, "node_modules", "matrix-js-sdk")):
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        pytest.skip(f"npm ci failed: {r.stderr[-300:]}")


@pytest.fixture(scope="module")
def js_sdk():
    _ensure_sdk()
    return os.path.join(JS_DIR, "prepared.mjs")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_js_sdk_prepared_with_push_rules_and_counts(hs, js_sdk):
    alice, bob = await users(hs, "alice", "bob")
    room = await create(alice, preset="public_chat", name="Team")
    await bob.post(f"{V3}/join/{room}")
    await send(alice, room, "first")
    await send(alice, room, content={"msgtype": "m.text", "body": "bob, look",
                                     "m.mentions": {"user_ids": [bob.user_id]}})
    out, err, code = await utils.getProcessOutputAndValue(
        shutil.which("node"), [js_sdk, base_url(hs), bob.user_id, bob.token, bob.device_id, room],
        env=dict(os.environ))
    assert code == 0, (out, err)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]  # the SDK logs too
    assert lines, (out, err)
    result = json.loads(lines[-1])
    assert result["state"] == "PREPARED", result
    assert result["overrideRules"][0] == ".m.rule.master"
    assert result["total"] == 2 and result["highlight"] == 1
    assert result["lastBody"] == "bob, look"
    assert result["lastNotify"] is True and result["lastHighlight"] is True
