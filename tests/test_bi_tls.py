"""Power BI over the network: the compose PostgreSQL's TLS and its pg_hba rules, run natively.

No container engine runs here, so these tests start what the compose `postgres` service
starts, natively: a throwaway PostgreSQL cluster (initdb into a temporary folder, a free
port) with the server settings of that service's `command` in docker-compose.yml, the very
pg_hba.conf it mounts (deploy/postgres/), and the certificate deploy/postgres/tls-init.sh
puts in place: `buffalo db make-cert`'s, or a self-signed one when there is none. Without
PostgreSQL's server binaries they fail, naming what to install: they are never skipped.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

from buffalo_assets.storage.tls import CertificateError, make_server_certificate
from tests.conftest import ROOT

# Where the compose service has what the tests have in a temporary folder.
CONTAINER_CONFIG = "/etc/buffalo/postgres"  # deploy/postgres/, mounted read-only
CONTAINER_CERTS = "/etc/buffalo/certs"  # deploy/certs/, mounted read-only
CONTAINER_TLS = "/var/lib/postgresql/tls"  # tls-init.sh's PG_TLS_DIR
TLS_INIT = ROOT / "deploy" / "postgres" / "tls-init.sh"
PG_HBA = ROOT / "deploy" / "postgres" / "pg_hba.conf"
SUPERUSER = "buffalo"  # POSTGRES_USER of the compose service
DATABASE = "buffalo"
BI_ROLE = "buffalo_bi"
BI_PASSWORD = "bi-secret-over-tls"


def compose_postgres() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services["postgres"]


def shipped_server_settings(tls_dir: Path, hba_file: Path) -> dict[str, str]:
    """The `-c` settings of the compose service's command, its container paths made ours."""
    command = compose_postgres()["command"]
    assert command[:2] == ["docker-entrypoint.sh", "postgres"], command
    flags = command[2:]
    assert flags[0::2] == ["-c"] * (len(flags) // 2) and len(flags) % 2 == 0, flags
    shipped = dict(flag.split("=", 1) for flag in flags[1::2])
    assert shipped["hba_file"] == f"{CONTAINER_CONFIG}/pg_hba.conf"
    ours = {name: value.replace(CONTAINER_TLS, str(tls_dir)) for name, value in shipped.items()}
    ours["hba_file"] = str(hba_file)
    return ours


def postgres_bindir() -> Path:
    """PostgreSQL's server binaries: 15's as Debian installs them, else pg_config's, else any."""
    candidates = [Path("/usr/lib/postgresql/15/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        answer = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(answer.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    pytest.fail(
        "PostgreSQL's server binaries (initdb, postgres) were not found in "
        f"{', '.join(str(c) for c in candidates)}: install PostgreSQL 15's server "
        "(Debian: apt-get install postgresql-15) or put its pg_config on PATH",
        pytrace=False,
    )


def server_user() -> str | None:
    """Who runs the cluster: PostgreSQL refuses root, so as root an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.fail("running as root and neither user postgres nor nobody exists to run PostgreSQL")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """One throwaway PostgreSQL cluster in `base`, run by `user` (None: this user)."""

    base: Path
    user: str | None
    bindir: Path = field(default_factory=postgres_bindir)
    port: int = field(default_factory=free_port)
    password: str = "superuser-secret"
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def give(self, path: Path) -> None:
        """Let the server's user own `path` (the tests run as root in CI)."""
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initdb(self) -> None:
        handover = self.base / "initdb-password"
        handover.write_text(self.password + "\n")
        self.give(handover)
        done = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={handover}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"],
            user=self.user, cwd=self.base, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        handover.unlink()
        assert done.returncode == 0, done.stderr

    def start(self, server_settings: dict[str, str]) -> None:
        sockets = self.base / "run"
        sockets.mkdir(exist_ok=True)
        self.give(sockets)
        options = [f"-c{name}={value}" for name, value in server_settings.items()]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(sockets), "-clisten_addresses=127.0.0.1", *options],
                user=self.user, cwd=self.base, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                self.superuser(dbname="postgres").close()
                return
            except psycopg2.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.log.read_text()[-3000:]
                    raise AssertionError(f"PostgreSQL did not start:\n{log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            self.process.wait(60)
        self.process = None

    def sql(self, statement: str, parameters: tuple[Any, ...] = (), dbname: str = "postgres") -> list[Any]:
        """One statement as the superuser, outside a transaction; its rows (none: [])."""
        connection = self.superuser(dbname=dbname)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement, parameters or None)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def connect(self, **options: Any) -> Any:
        return psycopg2.connect(port=self.port, connect_timeout=10, **options)

    def superuser(self, dbname: str = DATABASE, sslmode: str = "prefer") -> Any:
        """The stack's own role over TCP, as the services connect: its password, any sslmode."""
        return self.connect(
            host="127.0.0.1", dbname=dbname, user=SUPERUSER, password=self.password, sslmode=sslmode
        )

    def bi(self, sslmode: str, host: str = "localhost", **options: Any) -> Any:
        """The BI role as Power BI connects: by name (hostaddr: without a DNS lookup)."""
        return self.connect(
            host=host, hostaddr="127.0.0.1", dbname=DATABASE, user=BI_ROLE, password=BI_PASSWORD,
            sslmode=sslmode, **options,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    user = server_user()
    # Not pytest's tmp_path: as root, its folders are closed to the server's user.
    base = Path(tempfile.mkdtemp(prefix="buffalo-bi-tls-"))
    server = Cluster(base=base, user=user)
    server.give(base)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def tls_init(cluster: Cluster, source: Path) -> subprocess.CompletedProcess[str]:
    """deploy/postgres/tls-init.sh as the compose service runs it, into `<base>/tls`; then `true`."""
    env = {
        "PATH": os.environ["PATH"],
        "PG_TLS_SOURCE": str(source),
        "PG_TLS_DIR": str(cluster.base / "tls"),
        "PG_TLS_OWNER": cluster.user or pwd.getpwuid(os.getuid()).pw_name,
    }
    return subprocess.run(
        ["bash", str(TLS_INIT), "true"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def start_as_composed(cluster: Cluster) -> None:
    """initdb, then the server with the compose service's settings and its pg_hba.conf."""
    hba = cluster.base / "pg_hba.conf"
    shutil.copyfile(PG_HBA, hba)  # the shipped file, byte for byte, where the server's user reads it
    cluster.give(hba)
    cluster.initdb()
    cluster.start(shipped_server_settings(cluster.base / "tls", hba))


def buffalo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "buffalo_assets.cli", *args],
        env={"PATH": "/usr/bin:/bin", **env}, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def tls_of(connection: Any) -> tuple[bool, str | None]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl, version = cursor.fetchone()
    return ssl, version


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_power_bi_reads_the_bi_views_over_verified_tls_and_never_without_it(cluster: Cluster) -> None:
    # The certificate, as the operator makes it (docs/deploy.md): a CA and a server
    # certificate for the names the analysts connect to.
    certs = cluster.base / "certs"
    made = buffalo("db", "make-cert", "--host", "localhost", "--host", "127.0.0.1", "--out", str(certs))
    assert made.returncode == 0, made.stderr
    assert "made a new CA and a server certificate for localhost, 127.0.0.1" in made.stdout
    assert "CA thumbprint (SHA-1, as Windows shows it): " in made.stdout
    assert {p.name: mode(p) for p in certs.iterdir()} == {
        "ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600,
    }  # fmt: skip

    # tls-init.sh puts it where the server reads it, the key its user's alone.
    prepared = tls_init(cluster, certs)
    assert prepared.returncode == 0, prepared.stderr
    assert "TLS with the certificate of" in prepared.stderr
    key = cluster.base / "tls" / "server.key"
    assert mode(key) == 0o600 and key.read_bytes() == (certs / "server.key").read_bytes()
    if cluster.user is not None:
        assert key.stat().st_uid == pwd.getpwnam(cluster.user).pw_uid

    start_as_composed(cluster)
    assert cluster.sql("SELECT current_setting('ssl'), current_setting('ssl_min_protocol_version')") == [
        ("on", "TLSv1.2")
    ]
    assert cluster.sql("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL") == []
    cluster.sql(f"CREATE DATABASE {DATABASE}")

    # Migrated and granted as docs/deploy.md says, through BUFFALO_PG_URL.
    upgraded = buffalo("db", "upgrade", BUFFALO_PG_URL=cluster.url, BUFFALO_HOME=str(cluster.base))
    assert upgraded.returncode == 0, upgraded.stderr
    granted = buffalo(
        "db", "grant-bi", BUFFALO_PG_URL=cluster.url, BUFFALO_HOME=str(cluster.base),
        BUFFALO_BI_PASSWORD=BI_PASSWORD, BUFFALO_BI_STATEMENT_TIMEOUT_S="1", BUFFALO_BI_CONNECTION_LIMIT="3",
    )  # fmt: skip
    assert granted.returncode == 0, granted.stderr
    views = [
        row[0]
        for row in cluster.sql(
            "SELECT viewname FROM pg_views WHERE schemaname = 'analytics' AND viewname LIKE 'bi\\_%' "
            "ORDER BY viewname",
            dbname=DATABASE,
        )
    ]
    assert "bi_delivery_kpis" in views and f"role {BI_ROLE} reads the {len(views)} views" in granted.stdout

    # Power BI's way: TLS, the server verified against the CA, by the name in its SANs.
    ca = str(certs / "ca.crt")
    bi = cluster.bi("verify-full", sslrootcert=ca)
    try:
        assert tls_of(bi)[0] and tls_of(bi)[1] in ("TLSv1.2", "TLSv1.3")
        with bi.cursor() as cursor:
            for view in views:
                cursor.execute(f"SELECT * FROM analytics.{view}")
                cursor.fetchall()
        bi.rollback()
        # A heavy DirectQuery visual is cut off by the role's statement timeout.
        with pytest.raises(psycopg2.errors.QueryCanceled, match="statement timeout"), bi.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")
    finally:
        bi.close()
    cluster.bi("verify-full", host="127.0.0.1", sslrootcert=ca).close()  # an address in the SANs too

    # Without TLS the BI role is refused by pg_hba.conf, whatever its password.
    with pytest.raises(psycopg2.OperationalError) as refused:
        cluster.bi("disable")
    assert (
        f'pg_hba.conf rejects connection for host "127.0.0.1", user "{BI_ROLE}", database "{DATABASE}", '
        "no encryption"
    ) in str(refused.value)
    # A name the certificate was not made for: the client refuses the server.
    with pytest.raises(psycopg2.OperationalError, match="does not match host name"):
        cluster.bi("verify-full", host="db.wrong.test", sslrootcert=ca)
    # The stack's own roles keep their access from the stack's network, with or without TLS.
    plain = cluster.superuser(sslmode="disable")
    assert tls_of(plain) == (False, None)
    plain.close()


def test_without_a_certificate_the_server_still_starts_with_tls_that_no_client_can_verify(
    cluster: Cluster,
) -> None:
    empty = cluster.base / "no-certs"
    empty.mkdir()
    prepared = tls_init(cluster, empty)
    assert prepared.returncode == 0, prepared.stderr
    assert "TLS with a self-signed one made in this container" in prepared.stderr
    made = (cluster.base / "tls" / "server.crt").read_bytes()
    assert mode(cluster.base / "tls" / "server.key") == 0o600
    again = tls_init(cluster, empty)  # a restart of the same container keeps it
    assert again.returncode == 0 and (cluster.base / "tls" / "server.crt").read_bytes() == made

    start_as_composed(cluster)
    cluster.sql(f"CREATE DATABASE {DATABASE}")
    cluster.sql(f"CREATE ROLE {BI_ROLE} LOGIN PASSWORD %s", (BI_PASSWORD,))
    encrypted = cluster.superuser()  # libpq's default, sslmode=prefer: TLS
    assert tls_of(encrypted)[0]
    encrypted.close()
    unverified = cluster.bi("require")  # encrypted, the server not verified: admitted
    assert tls_of(unverified)[0]
    unverified.close()
    other_ca = cluster.base / "other-ca"
    make_server_certificate(other_ca, ["localhost"])
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        cluster.bi("verify-ca", sslrootcert=str(other_ca / "ca.crt"))
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        cluster.bi("disable")


def test_tls_init_refuses_half_a_certificate(cluster: Cluster) -> None:
    half = cluster.base / "half"
    half.mkdir()
    (half / "server.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    refused = tls_init(cluster, half)
    assert refused.returncode == 1
    assert "has only one of server.crt and server.key" in refused.stderr


def test_the_shipped_pg_hba_admits_the_bi_role_only_over_tls_and_others_only_from_the_stack() -> None:
    rules = [
        line.split()
        for line in PG_HBA.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    bi = [rule for rule in rules if rule[0] != "local" and rule[2] == BI_ROLE]
    assert bi == [
        ["hostssl", "all", BI_ROLE, "all", "scram-sha-256"],
        ["host", "all", BI_ROLE, "all", "reject"],
    ]
    first_bi = rules.index(bi[0])
    # Nothing before the BI role's rules could let it in another way.
    assert all(rule[0] == "local" for rule in rules[:first_bi])
    others = [rule for rule in rules if rule[0] != "local" and rule[2] != BI_ROLE]
    assert others and all(rule[-1] == "scram-sha-256" for rule in others)
    assert {rule[3] for rule in others} == {"samenet", "127.0.0.1/32", "::1/128"}
    # The compose service mounts this folder and the certificates' read-only, and runs tls-init.sh.
    service = compose_postgres()
    assert service["entrypoint"] == ["bash", f"{CONTAINER_CONFIG}/tls-init.sh"]
    assert "./deploy/postgres:/etc/buffalo/postgres:ro" in service["volumes"]
    assert f"./deploy/certs:{CONTAINER_CERTS}:ro" in service["volumes"]


# -- buffalo db make-cert ------------------------------------------------------------------------


def _verify(ca: Path, leaf: x509.Certificate, name: DNSName | IPAddress) -> None:
    store = Store([x509.load_pem_x509_certificate(ca.read_bytes())])
    PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])


def test_make_cert_signs_only_the_names_given_and_a_renewal_keeps_the_ca(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    issued = make_server_certificate(out, ["DB.example.internal", "10.20.0.5"])
    assert issued.hosts == ("db.example.internal", "10.20.0.5") and not issued.ca_reused
    assert mode(out / "ca.key") == 0o600 and mode(out / "server.key") == 0o600
    leaf = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db.example.internal"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.20.0.5")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    _verify(out / "ca.crt", leaf, DNSName("db.example.internal"))
    _verify(out / "ca.crt", leaf, IPAddress(ipaddress.ip_address("10.20.0.5")))
    with pytest.raises(VerificationError):
        _verify(out / "ca.crt", leaf, DNSName("db2.example.internal"))

    # Even with its key, the CA cannot vouch for another site: Windows trusts it as a root.
    ca_cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    rogue_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    now = datetime.now(UTC)
    rogue = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "bank")]))
        .issuer_name(ca_cert.subject).public_key(rogue_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.bank.example")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    with pytest.raises(VerificationError, match="(?i)name constraint|excluded|permitted"):
        _verify(out / "ca.crt", rogue, DNSName("www.bank.example"))

    # A renewal for names the CA covers keeps it: the analysts trust it already.
    ca_before, server_before = (out / "ca.crt").read_bytes(), (out / "server.crt").read_bytes()
    renewed = make_server_certificate(out, ["db.example.internal"], days=90)
    assert renewed.ca_reused and renewed.ca_sha1 == issued.ca_sha1
    assert (out / "ca.crt").read_bytes() == ca_before and (out / "server.crt").read_bytes() != server_before
    # Another name needs a new CA, said so; and only with --new-ca.
    with pytest.raises(CertificateError, match="may not sign db.other.internal: add --new-ca"):
        make_server_certificate(out, ["db.other.internal"])
    assert make_server_certificate(out, ["db.other.internal"], new_ca=True).ca_sha1 != issued.ca_sha1
    with pytest.raises(CertificateError, match="not a host name"):
        make_server_certificate(out, ["db_example!"])
