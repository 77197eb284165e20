"""``register_new_user``: create a user through the shared-secret admin API.

    register_new_user -c data/homeserver.yaml -u alice -p 'a password' [--admin | --no-admin]
    register_new_user -k SECRET -u alice http://127.0.0.1:8008

The server URL and secret come from the config (``-c``) unless given. It
speaks the same protocol as Synapse's tool of that name, so either tool works
against either server. Missing username or password are asked for on a
terminal.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

from homeserver.api.admin.register import PATH, compute_mac


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode("utf-8") if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


def register_user(server_url: str, secret: str, username: str, password: str, admin: bool,
                  user_type: str | None = None,
                  http: Callable[[str, str, Any], tuple[int, Any]] = _http) -> dict[str, Any]:
    """Run the nonce + HMAC exchange. Returns the server's answer; raises RuntimeError on refusal."""
    url = server_url.rstrip("/") + PATH
    status, body = http("GET", url, None)
    if status != 200 or "nonce" not in body:
        raise RuntimeError(f"could not get a nonce ({status}): {body.get('error', body)}")
    nonce = body["nonce"]
    data: dict[str, Any] = {"nonce": nonce, "username": username, "password": password, "admin": admin,
                            "mac": compute_mac(secret, nonce, username, password, admin, user_type)}
    if user_type:
        data["user_type"] = user_type
    status, body = http("POST", url, data)
    if status != 200:
        raise RuntimeError(f"{body.get('errcode', status)}: {body.get('error', body)}")
    return body


def _from_config(path: str) -> tuple[str | None, str]:
    """(shared secret, client URL) from a homeserver config file."""
    from homeserver.config import load_config

    config = load_config(path)
    listener = config.listeners[0]
    host = "localhost" if listener.bind in ("0.0.0.0", "::", "") else listener.bind
    if ":" in host:
        host = f"[{host}]"
    return config.registration_shared_secret, f"http://{host}:{listener.port}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="register_new_user",
                                description="Create a user on a homeserver with the registration shared secret.")
    p.add_argument("-c", "--config", metavar="FILE", help="homeserver config: gives the secret and server URL")
    p.add_argument("-k", "--shared-secret", metavar="SECRET", help="the registration_shared_secret")
    p.add_argument("-u", "--user", metavar="USER", help="localpart of the new user")
    p.add_argument("-p", "--password", metavar="PASSWORD", help="its password (asked for if missing)")
    admin = p.add_mutually_exclusive_group()
    admin.add_argument("-a", "--admin", dest="admin", action="store_true", default=None,
                       help="make the user a server admin")
    admin.add_argument("--no-admin", dest="admin", action="store_false", help="a normal user (the default)")
    p.add_argument("-t", "--user_type", default=None, help="'support' or 'bot' (optional)")
    p.add_argument("server_url", nargs="?", help="client API URL, e.g. http://127.0.0.1:8008")
    args = p.parse_args(argv)

    secret, url = args.shared_secret, args.server_url
    if args.config:
        from homeserver.config import ConfigError
        try:
            cfg_secret, cfg_url = _from_config(args.config)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 1
        secret = secret or cfg_secret
        url = url or cfg_url
    if not secret:
        print("register_new_user: no shared secret: give -k SECRET or -c CONFIG "
              "(with registration_shared_secret set)", file=sys.stderr)
        return 2
    url = url or "http://localhost:8008"
    interactive = sys.stdin.isatty()
    user = args.user
    if not user:
        if not interactive:
            print("register_new_user: -u USER is required", file=sys.stderr)
            return 2
        user = input("New user localpart: ").strip()
    password = args.password
    if password is None:
        if not interactive:
            print("register_new_user: -p PASSWORD is required", file=sys.stderr)
            return 2
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            print("Passwords do not match", file=sys.stderr)
            return 1
    if not password:
        print("register_new_user: the password may not be empty", file=sys.stderr)
        return 2
    is_admin = args.admin
    if is_admin is None:
        is_admin = interactive and input("Make admin [no]: ").strip().lower() in ("y", "yes", "true")
    try:
        result = register_user(url, secret, user, password, bool(is_admin), args.user_type)
    except (RuntimeError, OSError) as e:
        print(f"register_new_user: {e}", file=sys.stderr)
        return 1
    print(f"Registered {result['user_id']}" + (" (admin)" if is_admin else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
