"""Transport through a real ``underlay run``: HTTPS and mutual TLS with httpx and the openai SDK, and the
loopback-only default bind address.

The fixture builds a small PKI with ``cryptography``: a CA, a server certificate for 127.0.0.1, a
client certificate from that CA, and a second ("rogue") CA with its own client certificate, which a
server requiring client certificates must refuse.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.harness import RunningServer, free_port, start_server

ECHO = {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]}


@dataclass
class Issued:
    cert: Path
    key: Path


@dataclass
class Pki:
    ca: Path
    server: Issued
    client: Issued
    rogue_client: Issued


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Issued(cert_path, key_path)


def _issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _issue("Underlay Test CA", None, ca=True)
    rogue_ca = _issue("Rogue CA", None, ca=True)
    ca_files = _write(directory, "ca", *ca)
    return Pki(
        ca=ca_files.cert,
        server=_write(directory, "server", *_issue("127.0.0.1", ca, server=True)),
        client=_write(directory, "client", *_issue("client-alice", ca)),
        rogue_client=_write(directory, "rogue-client", *_issue("client-mallory", rogue_ca)),
    )


def client_context(pki: Pki, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def tls_config(pki: Pki, client_auth: str = "none") -> dict[str, Any]:
    tls: dict[str, Any] = {"certfile": str(pki.server.cert), "keyfile": str(pki.server.key), "client_auth": client_auth}
    if client_auth != "none":
        tls["ca_certs"] = str(pki.ca)
    return {"apis": ["inference", "models"], "providers": ECHO, "server": {"tls": tls}}


def _start(pki: Pki, client_auth: str, workdir: Path, pythonpath: Path) -> RunningServer:
    probe = client_context(pki, pki.client if client_auth == "required" else None)
    return start_server(tls_config(pki, client_auth), workdir, extra_pythonpath=[pythonpath], probe={"verify": probe})


@pytest.fixture(scope="module")
def https_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Any:
    server = _start(pki, "none", tmp_path_factory.mktemp("https"), external_provider_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Any:
    server = _start(pki, "required", tmp_path_factory.mktemp("mtls"), external_provider_path)
    yield server
    server.stop()


def _chat(client: openai.OpenAI) -> str | None:
    completion = client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "over tls"}])
    return completion.choices[0].message.content


def test_https_serves_the_openai_sdk(pki: Pki, https_server: RunningServer) -> None:
    assert https_server.v1.startswith("https://127.0.0.1:")
    assert f"on https://127.0.0.1:{https_server.port}/v1" in https_server.log()
    with httpx.Client(verify=client_context(pki)) as http:
        client = openai.OpenAI(base_url=https_server.v1, api_key="unused", max_retries=0, http_client=http)
        assert _chat(client) == "echo: over tls"
    # A client that does not trust our CA refuses the server; plain HTTP gets no answer.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_server.v1}/health")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https_server.port}/v1/health")


def _refused(url: str, context: ssl.SSLContext) -> None:
    """The TLS layer refuses: the handshake (or, with TLS 1.3, the first read after it) fails."""
    with pytest.raises(httpx.TransportError):
        httpx.get(url, verify=context)


def test_mtls_requires_a_client_certificate_from_the_ca(pki: Pki, mtls_server: RunningServer) -> None:
    url = f"{mtls_server.v1}/health"
    _refused(url, client_context(pki))
    _refused(url, client_context(pki, pki.rogue_client))
    assert httpx.get(url, verify=client_context(pki, pki.client)).status_code == 200
    with httpx.Client(verify=client_context(pki, pki.client)) as http:
        client = openai.OpenAI(base_url=mtls_server.v1, api_key="unused", max_retries=0, http_client=http)
        assert _chat(client) == "echo: over tls"
        assert [m.id for m in client.models.list()][:1] == ["echo/echo"]


def test_optional_client_auth_verifies_certificates_that_are_sent(
    pki: Pki, tmp_path: Path, external_provider_path: Path
) -> None:
    server = _start(pki, "optional", tmp_path, external_provider_path)
    try:
        url = f"{server.v1}/health"
        assert httpx.get(url, verify=client_context(pki)).status_code == 200
        assert httpx.get(url, verify=client_context(pki, pki.client)).status_code == 200
        _refused(url, client_context(pki, pki.rogue_client))
    finally:
        server.stop()


def _run_expecting_config_error(config: dict[str, Any], tmp_path: Path, pythonpath: Path) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), **config}))
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "run", str(path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_tls_config_mistakes_are_one_line_errors(pki: Pki, tmp_path: Path, external_provider_path: Path) -> None:
    config = tls_config(pki)
    config["server"]["tls"]["certfile"] = str(tmp_path / "missing.pem")
    line = _run_expecting_config_error(config, tmp_path / "missing", external_provider_path)
    assert "server.tls.certfile" in line and "no such file" in line and "missing.pem" in line

    config = tls_config(pki)
    config["server"]["tls"]["keyfile"] = str(pki.client.key)  # a key, but not the certificate's
    line = _run_expecting_config_error(config, tmp_path / "mismatch", external_provider_path)
    assert "server.tls.certfile/keyfile" in line and "matching" in line

    config = tls_config(pki)
    config["server"]["tls"]["certfile"] = str(pki.server.key)  # readable, but a key, not a certificate
    line = _run_expecting_config_error(config, tmp_path / "notcert", external_provider_path)
    assert "server.tls.certfile" in line and "holds no PEM certificate" in line

    config = tls_config(pki)
    config["server"]["tls"]["client_auth"] = "required"
    line = _run_expecting_config_error(config, tmp_path / "noca", external_provider_path)
    assert "server.tls" in line and "needs ca_certs" in line

    config = tls_config(pki, "required")
    config["server"]["tls"]["ca_certs"] = str(pki.server.key)  # readable, but no certificates in it
    line = _run_expecting_config_error(config, tmp_path / "badca", external_provider_path)
    assert "server.tls.ca_certs" in line


# -- binding -----------------------------------------------------------------------------------------
# 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not accept it: a connection there tells
# a server bound to 127.0.0.1 (refused) from one bound to every address (accepted).


def _accepts_on(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5):
            return True
    except ConnectionRefusedError:
        return False


def test_server_binds_loopback_unless_configured(echo_server: RunningServer, tmp_path: Path) -> None:
    assert "host" not in yaml.safe_load(echo_server.config_path.read_text())["server"]
    assert _accepts_on("127.0.0.1", echo_server.port)
    assert not _accepts_on("127.0.0.2", echo_server.port)
    config = {"apis": ["models"], "server": {"host": "0.0.0.0"}}
    everywhere = start_server(config, tmp_path)
    try:
        assert _accepts_on("127.0.0.2", everywhere.port)
    finally:
        everywhere.stop()
