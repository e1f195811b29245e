"""The PostgreSQL server's TLS certificate for the compose stack (`buffalo db make-cert`).

Power BI and the on-premises data gateway encrypt their connection and verify the server's
certificate against the machine's trusted roots. For a stack without a certificate from the
organisation's CA this makes a small private one:

    ca.crt      the CA certificate: what the analysts' machines and the gateway trust
    ca.key      its key (0600): kept on the server, it signs the next server certificate
    server.crt  the server certificate, for the host names and addresses given (its SANs)
    server.key  its key (0600): the compose `postgres` service reads these two

The CA may sign certificates for those names only (a critical X.509 name constraint), so a
CA that Windows trusts as a root can never be used to impersonate another site, even if its
key leaked. A second run with names the CA covers reuses it (the analysts trust it already)
and issues a new server certificate; other names need a new CA (`new_ca`), trusted anew.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
CA_DAYS = 3650
SERVER_DAYS = 825
# A DNS subtree nothing can be named under (RFC 6761): a CA made for addresses only may sign
# no DNS name at all.
_NO_NAME = "invalid"
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class CertificateError(ValueError):
    """The names or the files given cannot make a certificate (the message says why)."""


Host = ipaddress.IPv4Address | ipaddress.IPv6Address | str


@dataclass(frozen=True)
class Issued:
    """What `make_server_certificate` wrote."""

    folder: Path
    hosts: tuple[str, ...]
    ca_reused: bool
    not_after: datetime
    ca_sha1: str  # the CA's thumbprint as Windows shows it (certmgr, Cert:\\LocalMachine\\Root)
    ca_sha256: str

    @property
    def files(self) -> list[Path]:
        return [self.folder / name for name in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)]


def parse_host(text: str) -> Host:
    """A host name (lower case, plain ASCII labels) or an IP address, as a certificate names it."""
    value = text.strip().rstrip(".").lower()
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        pass
    labels = value.split(".")
    if not value or len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        raise CertificateError(
            f"not a host name or IP address: {text!r} (use the name clients connect to, e.g. "
            "db.example.internal; an internationalised name in its xn-- form)"
        )
    return value


def _san(host: Host) -> x509.GeneralName:
    return x509.DNSName(host) if isinstance(host, str) else x509.IPAddress(host)


def _name_constraints(hosts: Sequence[Host]) -> x509.NameConstraints:
    """The CA may sign exactly these names (and their subdomains) and these addresses."""
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts if isinstance(h, str)]
    names = names or [x509.DNSName(_NO_NAME)]
    addresses: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_network(h)) for h in hosts if not isinstance(h, str)
    ]
    # Without a permitted address of a family, that family is excluded altogether.
    excluded = [
        x509.IPAddress(ipaddress.ip_network(everything))
        for everything, version in (("0.0.0.0/0", 4), ("::/0", 6))
        if not any(not isinstance(h, str) and h.version == version for h in hosts)
    ]
    return x509.NameConstraints(permitted_subtrees=names + addresses, excluded_subtrees=excluded or None)


def _covered(ca: x509.Certificate, hosts: Sequence[Host]) -> list[str]:
    """The hosts this CA may not sign for (its name constraints), by name."""
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return [str(h) for h in hosts]  # not one of ours: never reused
    permitted = constraints.permitted_subtrees or []
    outside = []
    for host in hosts:
        if isinstance(host, str):
            ok = any(
                isinstance(p, x509.DNSName) and (host == p.value or host.endswith("." + p.value))
                for p in permitted
            )
        else:
            ok = any(
                isinstance(p, x509.IPAddress)
                and isinstance(p.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
                and host in p.value
                for p in permitted
            )
        if not ok:
            outside.append(str(host))
    return outside


def _key_usage(*uses: str) -> x509.KeyUsage:
    """KeyUsage with these uses on, every other off."""
    flags = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    assert set(uses) <= set(flags), uses
    return x509.KeyUsage(**{flag: flag in uses for flag in flags})


def _key() -> rsa.RSAPrivateKey:
    # RSA: what every Windows, .NET (Npgsql) and libpq version accepts.
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` with `mode` from the start (a key is never readable by others)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, mode)  # whatever the umask
    temporary.replace(path)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_ca(hosts: Sequence[Host], now: datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Buffalo Orders Platform"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Buffalo PostgreSQL CA {now:%Y-%m-%d}"),
        ]
    )
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(_name_constraints(hosts), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _existing_ca(folder: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey] | None:
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not cert_path.exists() and not key_path.exists():
        return None
    if not (cert_path.exists() and key_path.exists()):
        present, missing = (CA_CERT, CA_KEY) if cert_path.exists() else (CA_KEY, CA_CERT)
        raise CertificateError(
            f"{folder} has {present} but not {missing}: put the pair back, or make a new CA with "
            "--new-ca (the analysts' machines and the gateway must then trust the new ca.crt)"
        )
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != certificate.public_key():
        raise CertificateError(f"{key_path} is not the key of {cert_path}: use --new-ca")
    return certificate, key


def make_server_certificate(
    folder: Path, hosts: Sequence[str], *, days: int = SERVER_DAYS, new_ca: bool = False
) -> Issued:
    """Write a server certificate for `hosts` into `folder`, signed by its CA (made if needed)."""
    parsed = list(dict.fromkeys(parse_host(h) for h in hosts))
    if not parsed:
        raise CertificateError("give at least one --host: the name (or address) clients connect to")
    if not 1 <= days <= SERVER_DAYS:
        raise CertificateError(f"--days must be between 1 and {SERVER_DAYS}")
    now = datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    existing = None if new_ca else _existing_ca(folder)
    if existing is not None:
        outside = _covered(existing[0], parsed)
        if outside:
            raise CertificateError(
                f"the CA in {folder} was made for other names and may not sign {', '.join(outside)}: "
                "add --new-ca (the analysts' machines and the gateway must then trust the new ca.crt)"
            )
        if existing[0].not_valid_after_utc < now + timedelta(days=days):
            raise CertificateError(
                f"the CA in {folder} expires on {existing[0].not_valid_after_utc:%Y-%m-%d}, before the "
                "server certificate would: add --new-ca"
            )
        ca, ca_key = existing
    else:
        ca, ca_key = _new_ca(parsed, now)
    key = _key()
    public = key.public_key()
    not_after = now + timedelta(days=days)
    certificate = (
        x509.CertificateBuilder()
        # No host name in the subject: clients match the SANs (a dotted CN would also be
        # checked against the CA's name constraints by some of them).
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Buffalo PostgreSQL server")]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in parsed]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage("digital_signature", "key_encipherment"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    if existing is None:
        _write(folder / CA_KEY, _pem_key(ca_key), 0o600)
        _write(folder / CA_CERT, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(folder / SERVER_KEY, _pem_key(key), 0o600)
    _write(folder / SERVER_CERT, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(
        folder=folder,
        hosts=tuple(str(h) for h in parsed),
        ca_reused=existing is not None,
        not_after=not_after,
        ca_sha1=ca.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - the thumbprint Windows shows
        ca_sha256=ca.fingerprint(hashes.SHA256()).hex().upper(),
    )
