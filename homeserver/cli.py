"""The daemon's command line: ``python -m homeserver`` and the ``homeserver`` script.

    homeserver --generate-config --server-name NAME --config-path FILE [--data-dir DIR]
               [--listen-port N] [--bind ADDR] [--enable-registration] [--database-url URL]
    homeserver -c FILE
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import secrets
import sys
from importlib import resources
from typing import Any, Sequence

from homeserver.config import ConfigError, check_database_url, load_config

logger = logging.getLogger("homeserver")


def render_config(server_name: str, data_dir: str, port: int = 8008, bind: str = "127.0.0.1",
                  enable_registration: bool = False, database_url: str | None = None,
                  shared_secret: str | None = None, federation_port: int | None = None,
                  federation_insecure: bool = False, federation_bind: str = "0.0.0.0") -> str:
    """The commented YAML config that ``--generate-config`` writes."""
    template = resources.files("homeserver").joinpath("default_config.yaml").read_text("utf-8")
    values = {
        "__SERVER_NAME__": server_name,
        "__DATA_DIR__": data_dir,
        "__SIGNING_KEY_PATH__": os.path.join(data_dir, "signing.key"),
        "__BIND__": bind,
        "__PORT__": str(port),
        "__DATABASE_URL__": database_url or f"sqlite:///{os.path.join(data_dir, 'homeserver.db')}",
        "__ENABLE_REGISTRATION__": "true" if enable_registration else "false",
        "__SHARED_SECRET__": shared_secret or secrets.token_urlsafe(32),
        "__FEDERATION_PORT_LINE__": f"  port: {federation_port}" if federation_port is not None else "  # port: 8448",
        "__FEDERATION_BIND__": federation_bind,
        "__FEDERATION_INSECURE__": "true" if federation_insecure else "false",
    }
    for marker, value in values.items():
        template = template.replace(marker, value)
    return template


def federation_server_name(server_name: str, federation_port: int) -> str:
    """``localhost`` or an IP literal without a port becomes ``name:port``.

    Other servers find such a server only by the port in its name (there is
    no DNS or .well-known to delegate through). Real domains keep their name
    and delegate with .well-known or SRV (docs/federation.md).
    """
    import ipaddress

    if federation_port == 8448 or server_name.endswith("]") or server_name.count(":") == 1:
        return server_name
    try:
        ipaddress.ip_address(server_name)
        is_ip = True
    except ValueError:
        is_ip = False
    if server_name == "localhost" or is_ip:
        return f"[{server_name}]:{federation_port}" if ":" in server_name else f"{server_name}:{federation_port}"
    return server_name


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="homeserver", description="Matrix homeserver for group chat")
    p.add_argument("-c", "--config", metavar="FILE", help="run the server with this config file")
    p.add_argument("--generate-config", action="store_true", help="write a config and signing key, then exit")
    p.add_argument("--server-name", help="the server name (domain of user IDs)")
    p.add_argument("--config-path", metavar="FILE", help="where --generate-config writes the config")
    p.add_argument("--data-dir", metavar="DIR", default="data", help="database, keys and media (default: ./data)")
    p.add_argument("--listen-port", type=int, default=8008, metavar="N", help="client API port (default 8008)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR", help="client API address (default 127.0.0.1)")
    p.add_argument("--enable-registration", action="store_true", help="allow open registration")
    p.add_argument("--database-url", metavar="URL", help="sqlite:///path.db or postgresql://user@host:port/db")
    p.add_argument("--federation-port", type=int, metavar="N",
                   help="serve federation over TLS on this port (a localhost or IP server name gets ':N' appended)")
    p.add_argument("--federation-insecure", action="store_true",
                   help="TESTS ONLY: accept self-signed certificates and loopback/private destinations")
    return p


def generate(args: argparse.Namespace) -> int:
    from homeserver.server import load_or_create_signing_key

    if not args.server_name or not args.config_path:
        print("--generate-config needs --server-name and --config-path", file=sys.stderr)
        return 2
    if os.path.exists(args.config_path):
        print(f"{args.config_path} already exists; not overwriting it", file=sys.stderr)
        return 1
    if not 0 <= args.listen_port <= 65535:
        print("--listen-port must be between 0 and 65535", file=sys.stderr)
        return 2
    try:
        if args.database_url:
            check_database_url(args.database_url, "--database-url")
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    server_name = args.server_name
    if args.federation_port is not None:
        if not 0 < args.federation_port <= 65535:
            print("--federation-port must be between 1 and 65535", file=sys.stderr)
            return 2
        server_name = federation_server_name(server_name, args.federation_port)
    text = render_config(server_name, args.data_dir, args.listen_port, args.bind,
                         args.enable_registration, args.database_url, federation_port=args.federation_port,
                         federation_insecure=args.federation_insecure,
                         federation_bind="127.0.0.1" if args.federation_insecure else "0.0.0.0")
    os.makedirs(os.path.dirname(os.path.abspath(args.config_path)), exist_ok=True)
    os.makedirs(args.data_dir, exist_ok=True)
    fd = os.open(args.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    load_or_create_signing_key(os.path.join(args.data_dir, "signing.key"))
    print(f"wrote {args.config_path} and {os.path.join(args.data_dir, 'signing.key')}")
    if server_name != args.server_name:
        print(f"server_name is {server_name}: other servers reach this one by the port in its name")
    return 0


def import_reactor(tls_listener: bool) -> Any:
    """Twisted's default reactor and web server, without the TLS and HTTP/2 stacks unless needed.

    Importing the reactor imports ``twisted.internet.tcp``, which imports
    pyOpenSSL and cryptography (about 14 MB resident) only to offer
    ``startTLS()`` and ``listenSSL()``; ``twisted.web.http`` imports h2
    (about 1.4 MB) for HTTP/2, which Twisted speaks only on TLS listeners.
    The server calls ``listenSSL()`` for the federation listener and nothing
    else: its outbound HTTPS (federation, push gateways, application
    services) wraps plain TCP connections with ``wrapClientTLS``, which
    imports the TLS stack when it is first used, and Twisted's HTTP client
    speaks HTTP/1.1 only. So without a federation listener both modules are
    imported while ``OpenSSL`` and ``h2`` are hidden (Twisted then leaves TLS
    out of plain TCP connections and ``listenSSL``, and HTTP/2 out of the web
    server), and they are importable again straight after. Embedders that
    import the reactor themselves are not affected.
    """
    hidden = ("OpenSSL", "h2")
    if tls_listener or any(name in sys.modules for name in hidden + ("twisted.internet.reactor", "twisted.web.http")):
        return _install_reactor()
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import OpenSSL" raises ImportError
    try:
        reactor = _install_reactor()
        import twisted.web.http  # noqa: F401
    finally:
        for name in hidden:
            del sys.modules[name]
    return reactor


def _install_reactor() -> Any:
    """:class:`~homeserver.util.reactor.LeanEPollReactor` where epoll exists and no reactor is installed yet."""
    import select

    if "twisted.internet.reactor" not in sys.modules and hasattr(select, "epoll"):  # epoll: Linux only
        from homeserver.util.reactor import install
        return install()
    from twisted.internet import reactor
    return reactor


def run(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    federation = config.raw.get("federation")
    reactor = import_reactor(isinstance(federation, dict) and federation.get("port") is not None)
    from twisted.internet import defer

    from homeserver.server import HomeServer

    try:
        hs = HomeServer(config, reactor)
    except ConfigError as e:  # extension sections (media, ...) are parsed by their services
        print(e, file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"cannot start: {e}", file=sys.stderr)
        return 1
    exit_code = [0]

    async def start() -> None:
        try:
            await hs.start()
        except Exception as e:  # start-up failures end the process with one line
            logger.error("cannot start: %s", e)
            exit_code[0] = 1
            reactor.stop()
            return
        logger.info("homeserver %s started", config.server_name)
        # What start-up loaded (modules, config, caches) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise scan it every time
        # (a full pass over it stalled the reactor for 60 ms).
        gc.collect()
        gc.freeze()

    # Twisted turns SIGINT/SIGTERM into reactor.stop(); this trigger lets
    # in-flight requests finish and closes the database before the process exits.
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.Deferred.fromCoroutine(hs.stop()))
    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(start()))
    reactor.run()
    return exit_code[0]


def bridge_twisted_logs() -> None:
    """Send Twisted's log events (and autobahn's, through txaio) to the ``logging`` module.

    Without an observer Twisted keeps them in a buffer nobody reads, so an
    unhandled error in a Deferred, or a failing shutdown trigger, left no
    trace. Twisted's informational chatter (factories starting and stopping)
    is kept out unless the log level is DEBUG. The daemon calls this; an
    embedding application keeps whatever logging it set up.
    """
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    twisted_logger = logging.getLogger("twisted")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        twisted_logger.setLevel(logging.WARNING)
    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("HOMESERVER_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.generate_config:
        return generate(args)
    if args.config:
        bridge_twisted_logs()
        return run(args.config)
    _parser().print_usage(sys.stderr)
    print("homeserver: give -c FILE to run, or --generate-config", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
