"""A private PostgreSQL server for the tests: installed from Debian's packages when absent,
initialised in a temporary folder, run as a non-root user on a free loopback port.

    server = PostgresServer.start()
    url = server.fresh_url()   # an empty schema of its own, for one test
    server.stop()

PostgreSQL refuses to run as root, so under root the cluster belongs to the system user
`forecaster-test` (made when missing).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

USER = "forecaster-test"


def _bin_dir() -> Path:
    """The folder of initdb and pg_ctl; installs Debian's postgresql when neither is found."""
    found = shutil.which("initdb") and shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # /usr/local/bin/initdb may be a link
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        if os.geteuid() != 0:
            raise RuntimeError(
                "PostgreSQL is not installed and the tests are not root: "
                "run `apt-get install -y postgresql` (or run the tests as root)."
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
            check=True,
            env=env,
        )
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _runner() -> tuple[int | None, int | None]:
    """(uid, gid) to run the server as: ours, or forecaster-test's when we are root."""
    if os.geteuid() != 0:
        return None, None
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


@dataclass
class PostgresServer:
    """A running private cluster; `url` reaches its `postgres` database as `postgres`."""

    root: Path
    bin_dir: Path
    port: int
    uid: int | None
    gid: int | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = _bin_dir()
        uid, gid = _runner()
        root = Path(tempfile.mkdtemp(prefix="forecaster-pg-"))
        if uid is not None:
            os.chown(root, uid, gid if gid is not None else -1)
        server = cls(root, bin_dir, _free_port(), uid, gid)
        server._pg(
            "initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        options = f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        server._pg(
            "pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-o", options, "-w",
            "-t", "60", "start",
        )  # fmt: skip
        return server

    def _pg(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self.bin_dir / program), *args],
            user=self.uid,
            group=self.gid,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {result.stderr or result.stdout}\n{tail}")

    def fresh_url(self) -> str:
        """The URL of a new, empty schema (cheaper than a database per test)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{self.url}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        try:
            self._pg("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
