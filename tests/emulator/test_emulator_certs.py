"""The self-signed certificate the emulator (and the gateway, in tests) serve HTTPS with."""

import ipaddress
import ssl
import subprocess
import sys

import httpx
from cryptography import x509

from emulator.certs import generate_self_signed


def test_certificate_names_localhost_and_the_loopback_ip(tmp_path):
    cert_path, key_path = generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem")

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert key_path.stat().st_mode & 0o077 == 0


def test_clients_trust_the_emulator_with_the_certificate_as_ca(emulator_tls):
    context = ssl.create_default_context(cafile=str(emulator_tls.ca_path))

    response = httpx.get(f"{emulator_tls.url}/ping", verify=context)

    assert emulator_tls.url.startswith("https://127.0.0.1:")
    assert response.json() == {"status": "ok"}


def test_certs_command_writes_both_files(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "emulator.certs", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )

    assert (tmp_path / "cert.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in (tmp_path / "key.pem").read_bytes()
