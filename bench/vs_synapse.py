#!/usr/bin/env python3
"""Run a load scenario against this homeserver and stock Synapse, side by side.

Both servers run on this machine, on the same database engine, with open
registration, rate limits off and the same bcrypt cost; then the yardstick
(../shared/bench/mxbench.py, or any script taking ``--hs A --vs B``) runs
each scenario on ours, then on Synapse, and prints Synapse/ours ratios.

    python bench/vs_synapse.py --db sqlite send fanout
    python bench/vs_synapse.py --db postgres --bench bench/scenarios.py fanout500
    python bench/vs_synapse.py --only ours --keep ...   # just start ours and run

Synapse comes from PyPI into its own venv (``--synapse-venv``, created on
first use), never into the project's environment.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MXBENCH = os.environ.get("MXBENCH", "/work/shared/bench/mxbench.py")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def ensure_synapse(venv: str) -> str:
    python = os.path.join(venv, "bin", "python")
    probe = subprocess.run([python, "-c", "import synapse, aiohttp, psycopg2"], capture_output=True) \
        if os.path.exists(python) else None
    if probe is None or probe.returncode != 0:
        print(f"installing Synapse into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "matrix-synapse[postgres]", "aiohttp"], check=True)
    return python


def create_pg_db() -> str:
    import psycopg2
    name = "bench_" + uuid.uuid4().hex[:10]
    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        # Synapse insists on C collation.
        cur.execute(f"CREATE DATABASE {name} TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C' ENCODING 'UTF8'")
    conn.close()
    return name


def drop_pg_db(name: str) -> None:
    import psycopg2
    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url + "/_matrix/client/versions", timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def start_ours(workdir: str, port: int, db: str, dbs: list[str]) -> subprocess.Popen:
    cfg = os.path.join(workdir, "ours.yaml")
    data = os.path.join(workdir, "ours-data")
    args = [sys.executable, "-m", "homeserver", "--generate-config", "--server-name", "bench.local",
            "--config-path", cfg, "--data-dir", data, "--listen-port", str(port), "--enable-registration"]
    if db == "postgres":
        name = create_pg_db()
        dbs.append(name)
        args += ["--database-url", f"postgresql://postgres@127.0.0.1:5432/{name}"]
    subprocess.run(args, check=True, cwd=workdir, capture_output=True)
    with open(cfg) as f:
        config = yaml.safe_load(f)
    config.update(bcrypt_rounds=4, access_log=False, rate_limiting={"enabled": False})
    with open(cfg, "w") as f:
        yaml.safe_dump(config, f)
    log = open(os.path.join(workdir, "ours.log"), "w")
    env = dict(os.environ, HOMESERVER_LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "homeserver", "-c", cfg]
    if os.environ.get("BENCH_PYSPY"):
        # BENCH_PYSPY=/tmp/ours.txt samples our server for the whole run (collapsed stacks, one line
        # per stack and thread); BENCH_PYSPY_IDLE=1 also keeps idle samples (time spent waiting on
        # the database shows up as socket reads on the database threads).
        spy = [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "-f", "raw", "--threads",
               "-o", os.environ["BENCH_PYSPY"]]
        if os.environ.get("BENCH_PYSPY_IDLE"):
            spy.append("--idle")
        cmd = spy + ["--"] + cmd
    return subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)


def server_pid(proc: subprocess.Popen) -> int:
    """The server's own pid: the child when py-spy wraps it (BENCH_PYSPY)."""
    if not str(proc.args[0]).endswith("py-spy"):
        return proc.pid
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = f.read().split()
    except OSError:
        return proc.pid
    return int(children[0]) if children else proc.pid


def start_synapse(python: str, workdir: str, port: int, db: str, dbs: list[str]) -> subprocess.Popen:
    sdir = os.path.join(workdir, "synapse")
    os.makedirs(sdir)
    cfg = os.path.join(sdir, "homeserver.yaml")
    subprocess.run([python, "-m", "synapse.app.homeserver", "--server-name", "bench.local",
                    "--config-path", cfg, "--data-directory", sdir, "--generate-config",
                    "--report-stats=no"], check=True, cwd=sdir, capture_output=True)
    with open(cfg) as f:
        config = yaml.safe_load(f)
    unlimited = {"per_second": 100000, "burst_count": 100000}
    config.update(
        listeners=[{"port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                    "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
        enable_registration=True, enable_registration_without_verification=True, bcrypt_rounds=4,
        rc_message=unlimited, rc_registration=unlimited, rc_joins={"local": unlimited, "remote": unlimited},
        rc_login={"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
        rc_invites={"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
        rc_joins_per_room=unlimited, rc_presence={"per_user": unlimited},
        rc_room_creation=unlimited, rc_admin_redaction=unlimited,
        trusted_key_servers=[], suppress_key_server_warning=True, federation_domain_whitelist=[],
    )
    if db == "postgres":
        name = create_pg_db()
        dbs.append(name)
        config["database"] = {"name": "psycopg2", "args": {"user": "postgres", "host": "127.0.0.1",
                                                            "port": 5432, "database": name,
                                                            "cp_min": 5, "cp_max": 10}}
    with open(cfg, "w") as f:
        yaml.safe_dump(config, f)
    log_cfg = os.path.join(sdir, "bench.local.log.config")
    if os.path.exists(log_cfg):  # keep Synapse's log quiet so logging costs both sides alike
        with open(log_cfg) as f:
            text = f.read().replace("level: INFO", "level: WARNING")
        with open(log_cfg, "w") as f:
            f.write(text)
    log = open(os.path.join(workdir, "synapse.log"), "w")
    return subprocess.Popen([python, "-m", "synapse.app.homeserver", "-c", cfg], cwd=sdir, stdout=log,
                            stderr=subprocess.STDOUT)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--synapse-venv", default=os.environ.get("SYNAPSE_VENV", "/tmp/synapse-bench"))
    p.add_argument("--bench", default=MXBENCH, help="the load script (default: shared mxbench.py)")
    p.add_argument("--only", choices=["ours", "synapse"], help="run one server only")
    p.add_argument("--port", type=int, default=18008)
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, configs)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="scenario names and flags for the load script")
    a = p.parse_args()
    python = ensure_synapse(a.synapse_venv) if a.only != "ours" else sys.executable
    workdir = tempfile.mkdtemp(prefix="hsbench-")
    procs: list[subprocess.Popen] = []
    dbs: list[str] = []
    try:
        ours_url = f"http://127.0.0.1:{a.port}"
        syn_url = f"http://127.0.0.1:{a.port + 10}"
        if a.only != "synapse":
            procs.append(start_ours(workdir, a.port, a.db, dbs))
            wait_up(ours_url, procs[-1])
        if a.only != "ours":
            procs.append(start_synapse(python, workdir, a.port + 10, a.db, dbs))
            wait_up(syn_url, procs[-1])
        if a.only == "ours":
            cmd = [python, a.bench, "--hs", ours_url]
        elif a.only == "synapse":
            cmd = [python, a.bench, "--hs", syn_url]
        else:
            cmd = [python, a.bench, "--hs", ours_url, "--vs", syn_url]
        print(f"# db={a.db} workdir={workdir}", flush=True)
        result = subprocess.run(cmd + a.args)
        names = ["ours", "synapse"] if a.only is None else [a.only]
        for name, proc in zip(names, procs):
            print(f'{{"server": "{name}", "rss_mb_after": {rss_mb(server_pid(proc)):.1f}}}', flush=True)
        return result.returncode
    finally:
        for proc in procs:
            # Under py-spy, stop the server itself: py-spy then writes its profile and exits.
            os.kill(server_pid(proc), signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for name in dbs:
            drop_pg_db(name)
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"# kept {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
