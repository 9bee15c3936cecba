"""A self-signed TLS certificate for local HTTPS (the emulator's, and the gateway's in tests).

botocore sends a bearer token only over HTTPS, so tests need a certificate that a client can
trust with ``verify=cert_path``: one self-signed certificate, valid for ``localhost`` and
``127.0.0.1`` (as an IP SAN), acting as its own CA.

    python -m emulator.certs --out DIR   # writes DIR/cert.pem and DIR/key.pem
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["generate_self_signed"]


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def generate_self_signed(
    cert_path: str | Path,
    key_path: str | Path,
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 825,
) -> tuple[Path, Path]:
    """Write a PEM certificate and its unencrypted PEM key; returns both paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hostnames]), critical=False)
        # CA:TRUE lets the certificate be its own trust anchor (verify=cert_path, cafile=...);
        # OpenSSL 3 refuses a self-signed leaf as a CA without it.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = Path(cert_path), Path(key_path)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulator.certs", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="directory for cert.pem and key.pem"
    )
    parser.add_argument(
        "--hostname",
        action="append",
        dest="hostnames",
        help="a DNS name or IP to be valid for (repeatable; default: localhost and 127.0.0.1)",
    )
    args = parser.parse_args(argv)
    cert, key = generate_self_signed(
        args.out / "cert.pem",
        args.out / "key.pem",
        tuple(args.hostnames or ("localhost", "127.0.0.1")),
    )
    print(f"certificate: {cert}\nkey: {key}")


if __name__ == "__main__":
    main()
