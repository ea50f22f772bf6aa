"""A throwaway PostgreSQL server for the outbox tests, started from the system's binaries.

initdb refuses to run as root (CI runs as root), so as root the server runs as
the ``postgres`` user (or ``nobody``) through ``runuser``, in a temporary
directory that user owns. It listens on 127.0.0.1 on a free port, trusts local
connections, and skips fsync (the tests crash clients, never this server).
Missing binaries are an error, never a skip: see .ci/install-postgres.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found: the outbox's PostgreSQL"
    " tests need them. Install them with .ci/install-postgres (Debian: apt-get install"
    " postgresql), or put initdb on PATH."
)


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are, newest version first; None if nowhere."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runner() -> tuple[list[str], int | None, int | None]:
    if os.geteuid() != 0:
        return [], None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], user.pw_uid, user.pw_gid
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Run a server for the block; yields its ``postgresql://`` URL."""
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError(MISSING)
    prefix, uid, gid = _runner()
    base = Path(tempfile.mkdtemp(prefix="knai-pg-"))
    data = base / "data"
    port = _free_port()
    try:
        if uid is not None and gid is not None:
            os.chown(base, uid, gid)
        subprocess.run(
            [
                *prefix,
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                "knai",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        options = f"-h 127.0.0.1 -p {port} -k {base} -F -c max_connections=200"
        subprocess.run(
            [
                *prefix,
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(base / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        try:
            yield f"postgresql://knai@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                check=False,
                capture_output=True,
            )
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}"
        ) from exc
    finally:
        shutil.rmtree(base, ignore_errors=True)
