"""Signing JSON and events; the signing key file format.

JSON signing follows the appendices ("Signing JSON", "Checking for a
signature"): the signature covers the canonical JSON of the object without
``signatures`` and ``unsigned``. Events are hashed, redacted, then signed,
as in server-server-api.md "Signing Events".
"""

from __future__ import annotations

import io
from typing import Any, Callable, Iterable, Mapping

import nacl.exceptions
import signedjson.key
import signedjson.sign
from canonicaljson import encode_canonical_json
from signedjson.types import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64, encode_base64

from homeserver.core.events import compute_content_hash, redact_pdu
from homeserver.core.ids import InvalidIdError, get_domain_from_id
from homeserver.core.room_versions import RoomVersion

GetVerifyKey = Callable[[str, str], "VerifyKey | None"]


class SignatureError(Exception):
    """A required signature is missing or does not verify."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- keys --------------------------------------------------------------------


def generate_signing_key(version: str) -> SigningKey:
    """A new ed25519 signing key whose key ID will be ``ed25519:<version>``."""
    return signedjson.key.generate_signing_key(version)


def read_signing_keys(text: str) -> list[SigningKey]:
    """Parse a Synapse-style key file: lines of ``ed25519 <version> <base64 seed>``."""
    return list(signedjson.key.read_signing_keys(io.StringIO(text)))


def write_signing_keys(keys: Iterable[SigningKey]) -> str:
    """Serialise keys in the format :func:`read_signing_keys` reads."""
    out = io.StringIO()
    signedjson.key.write_signing_keys(out, keys)
    return out.getvalue()


def encode_verify_key_base64(key: VerifyKey) -> str:
    """Unpadded base64 of a verify key's 32 public bytes."""
    return signedjson.key.encode_verify_key_base64(key)


def key_id(key: SigningKey | VerifyKey) -> str:
    """``<alg>:<version>`` for a key built by signedjson."""
    return f"{key.alg}:{key.version}"


# --- JSON --------------------------------------------------------------------


def _signing_bytes(obj: Mapping[str, Any]) -> bytes:
    return encode_canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})


def sign_json(obj: Mapping[str, Any], server_name: str, signing_key: SigningKey) -> dict[str, Any]:
    """Return a copy of ``obj`` with ``signing_key``'s signature added."""
    signed = dict(obj)
    signed["signatures"] = {k: dict(v) for k, v in (obj.get("signatures") or {}).items()}
    sig = signing_key.sign(_signing_bytes(obj)).signature
    signed["signatures"].setdefault(server_name, {})[key_id(signing_key)] = encode_base64(sig)
    return signed


def _verify_sig(message: bytes, sig_b64: str, verify_key: VerifyKey) -> bool:
    try:
        verify_key.verify(message, decode_base64(sig_b64))
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def verify_json(obj: Mapping[str, Any], server_name: str, verify_key: VerifyKey, key_id_: str | None = None) -> None:
    """Check ``obj`` carries a valid signature by ``server_name`` with ``verify_key``.

    Args:
        key_id_: The key ID to look for; defaults to the key's own
            ``alg:version``.

    Raises:
        SignatureError: if the signature is missing or invalid.
    """
    kid = key_id_ or key_id(verify_key)
    try:
        sig = obj["signatures"][server_name][kid]
    except (KeyError, TypeError):
        raise SignatureError(f"missing signature for {server_name} {kid}") from None
    if not isinstance(sig, str) or not _verify_sig(_signing_bytes(obj), sig, verify_key):
        raise SignatureError(f"invalid signature for {server_name} {kid}")


# --- events ------------------------------------------------------------------


def add_hashes_and_signatures(
    pdu: Mapping[str, Any], room_version: RoomVersion, server_name: str, signing_key: SigningKey
) -> dict[str, Any]:
    """Return a copy of ``pdu`` with its content hash set and signed.

    The signature covers the *redacted* event (which keeps ``hashes``), so
    it still verifies after a redaction while the hash protects the rest.
    """
    out = dict(pdu)
    out["hashes"] = {**(pdu.get("hashes") or {}), "sha256": compute_content_hash(pdu)}
    signed = sign_json(redact_pdu(out, room_version), server_name, signing_key)
    out["signatures"] = signed["signatures"]
    return out


def sign_event(pdu: Mapping[str, Any], room_version: RoomVersion, server_name: str, signing_key: SigningKey) -> dict[str, Any]:
    """Add a signature to an already hashed PDU (e.g. co-signing a join)."""
    signed = sign_json(redact_pdu(pdu, room_version), server_name, signing_key)
    out = dict(pdu)
    out["signatures"] = signed["signatures"]
    return out


def required_signature_servers(pdu: Mapping[str, Any], room_version: RoomVersion) -> set[str]:
    """The servers whose signatures an event must carry.

    * The sender's server, except for invites via a third-party invite,
      which another server may relay on the sender's behalf.
    * v1/v2: also the server named in the event ID.
    * v8+ membership events naming ``join_authorised_via_users_server``:
      that user's server.
    """
    servers: set[str] = set()
    content = pdu.get("content") or {}
    is_member = pdu.get("type") == "m.room.member"
    membership = content.get("membership") if isinstance(content, dict) else None
    try:
        if not (is_member and membership == "invite" and "third_party_invite" in content):
            servers.add(get_domain_from_id(pdu["sender"]))
        if room_version.event_id_format == "v1":
            servers.add(get_domain_from_id(pdu["event_id"]))
        # Auth rule "join_authorised_via_users_server": whatever the
        # membership, the named user's server must have signed.
        if room_version.restricted_join_rule and is_member:
            authoriser = content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str):
                servers.add(get_domain_from_id(authoriser))
    except (InvalidIdError, KeyError, TypeError) as e:
        raise SignatureError(f"cannot tell which servers must sign: {e}") from None
    return servers


def verify_event_signatures(pdu: Mapping[str, Any], room_version: RoomVersion, get_verify_key: GetVerifyKey) -> None:
    """Check the signatures an event needs, on its redacted form.

    Keys that ``get_verify_key`` does not know (returns None for) are
    skipped, as the spec says; but each required server must have at least
    one signature made with a known key, and every known key must verify.
    Key validity periods (room v5+) are the callable's business: it should
    return None for keys expired before the event's ``origin_server_ts``.

    Raises:
        SignatureError: naming the first server whose signature fails.
    """
    redacted = redact_pdu(pdu, room_version)
    message = _signing_bytes(redacted)
    signatures = pdu.get("signatures")
    if not isinstance(signatures, dict):
        raise SignatureError("event has no signatures")
    for server in sorted(required_signature_servers(pdu, room_version)):
        server_sigs = signatures.get(server)
        if not isinstance(server_sigs, dict) or not server_sigs:
            raise SignatureError(f"event is not signed by {server}")
        verified = False
        for kid, sig in server_sigs.items():
            if not kid.startswith("ed25519:"):
                continue
            vk = get_verify_key(server, kid)
            if vk is None:
                continue
            if not isinstance(sig, str) or not _verify_sig(message, sig, vk):
                raise SignatureError(f"invalid signature from {server} with key {kid}")
            verified = True
        if not verified:
            raise SignatureError(f"no signature from {server} with a known key")
