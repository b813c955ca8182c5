"""TLS and mutual TLS end to end: throwaway certificates, real handshakes.

Every test here connects through a real TLS port. A refused handshake must
surface as `UnavailableError` quickly (clients use short call timeouts), never
as a hang or as a deadline that merely ran out.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import Processes
from zbrain import Client, JobState
from zbrain.connection import TlsFiles
from zbrain.errors import UnavailableError
from zbrain_server.app import ZBrainServer

StartServer = Callable[..., Awaitable[ZBrainServer]]

# A refusal is reported as soon as the handshake fails, in milliseconds. The call
# timeout only bounds a regression: a call that hung would end as
# DeadlineExceededError, which the refusal tests do not accept.
REFUSAL_TIMEOUT_S = 5.0


# -- a throwaway PKI ----------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both written as PEM files."""

    cert: Path
    key: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    """Our CA with a server and a client certificate, and an unrelated CA with its own client."""

    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued
    other_client: Issued


def _issue(
    directory: Path,
    name: str,
    *,
    issuer: Issued | None,
    usage: x509.ObjectIdentifier | None = None,
    alt_names: list[x509.GeneralName] | None = None,
) -> Issued:
    """Write NAME.pem and NAME.key: a CA when `issuer` is None, else a leaf it signs."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"zbrain test {name}")])
    now = datetime.datetime.now(datetime.UTC)
    is_ca = issuer is None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not is_ca,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), critical=False
        )
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    signer = issuer.private_key if issuer else private_key
    certificate = builder.sign(signer, hashes.SHA256())

    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path, certificate, private_key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Certificates valid for 127.0.0.1 and localhost, written under tmp_path/pki."""
    directory = tmp_path / "pki"
    directory.mkdir()
    ca = _issue(directory, "ca", issuer=None)
    other_ca = _issue(directory, "other-ca", issuer=None)
    return Pki(
        ca=ca,
        server=_issue(
            directory,
            "server",
            issuer=ca,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            alt_names=[
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
            ],
        ),
        client=_issue(directory, "client", issuer=ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        other_ca=other_ca,
        other_client=_issue(
            directory, "other-client", issuer=other_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH
        ),
    )


@pytest.fixture(autouse=True)
def no_tls_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """TlsFiles falls back to ZBRAIN_TLS_*; a developer's shell must not decide these tests."""
    for name in ("ZBRAIN_TLS_CA", "ZBRAIN_TLS_CERT", "ZBRAIN_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def tls_server(start_server: StartServer, pki: Pki) -> ZBrainServer:
    """A server whose port speaks TLS only (server certificate signed by our CA)."""
    return await start_server(tls_cert=pki.server.cert, tls_key=pki.server.key)


@pytest.fixture
async def mtls_server(start_server: StartServer, pki: Pki) -> ZBrainServer:
    """A server that also demands a client certificate signed by our CA."""
    return await start_server(
        tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=pki.ca.cert
    )


def our_client(pki: Pki) -> TlsFiles:
    """Trust our CA and present the client certificate it signed."""
    return TlsFiles(ca=pki.ca.cert, cert=pki.client.cert, key=pki.client.key)


async def assert_refused(address: str, tls: TlsFiles | None) -> None:
    """A call over this channel fails with UnavailableError, well before any deadline."""
    async with await Client.connect(address, tls=tls, timeout=REFUSAL_TIMEOUT_S) as client:
        with pytest.raises(UnavailableError) as refused:
            await client.submit(["true"])
    assert "--tls-ca" in str(refused.value), "the message points at the TLS settings"


# -- server TLS ---------------------------------------------------------------------


async def test_client_trusting_the_ca_submits_and_gets_a_job(
    tls_server: ZBrainServer, pki: Pki
) -> None:
    tls = TlsFiles(ca=pki.ca.cert)
    async with await Client.connect(tls_server.address, tls=tls, timeout=5) as client:
        job = await client.submit(["echo", "over tls"], labels={"via": "tls"})
        fetched = await client.get(job.id)

    assert fetched.id == job.id
    assert fetched.cmd == ("echo", "over tls")
    assert fetched.labels == {"via": "tls"}
    assert fetched.state is JobState.PENDING


async def test_localhost_name_matches_the_server_certificate(
    tls_server: ZBrainServer, pki: Pki
) -> None:
    address = f"localhost:{tls_server.port}"
    async with await Client.connect(address, tls=TlsFiles(ca=pki.ca.cert), timeout=5) as client:
        job = await client.submit(["true"])

    assert job.state is JobState.PENDING


async def test_plaintext_client_is_refused_by_a_tls_server(tls_server: ZBrainServer) -> None:
    await assert_refused(tls_server.address, tls=None)


async def test_client_not_trusting_the_servers_ca_is_refused(
    tls_server: ZBrainServer, pki: Pki
) -> None:
    await assert_refused(tls_server.address, tls=TlsFiles(ca=pki.other_ca.cert))


async def test_tls_client_is_refused_by_a_plaintext_server(
    start_server: StartServer, pki: Pki
) -> None:
    plaintext = await start_server()
    await assert_refused(plaintext.address, tls=TlsFiles(ca=pki.ca.cert))


# -- mutual TLS ---------------------------------------------------------------------


async def test_mtls_client_with_a_certificate_from_the_ca_is_served(
    mtls_server: ZBrainServer, pki: Pki
) -> None:
    async with await Client.connect(mtls_server.address, tls=our_client(pki), timeout=5) as client:
        job = await client.submit(["true"])
        fetched = await client.get(job.id)

    assert fetched.id == job.id


async def test_mtls_client_without_a_certificate_is_refused(
    mtls_server: ZBrainServer, pki: Pki
) -> None:
    await assert_refused(mtls_server.address, tls=TlsFiles(ca=pki.ca.cert))


async def test_mtls_client_with_a_certificate_from_another_ca_is_refused(
    mtls_server: ZBrainServer, pki: Pki
) -> None:
    stranger = TlsFiles(ca=pki.ca.cert, cert=pki.other_client.cert, key=pki.other_client.key)
    await assert_refused(mtls_server.address, tls=stranger)


async def test_worker_over_mtls_runs_a_job_end_to_end(
    mtls_server: ZBrainServer, pki: Pki, processes: Processes
) -> None:
    processes.worker(
        mtls_server.address,
        "--tls-ca",
        str(pki.ca.cert),
        "--tls-cert",
        str(pki.client.cert),
        "--tls-key",
        str(pki.client.key),
    )
    async with await Client.connect(mtls_server.address, tls=our_client(pki), timeout=5) as client:
        job = await client.submit(["echo", "hi"])
        done = await client.wait(job.id, timeout=30)
        lines = [line.text async for line in client.logs(job.id)]

    assert done.state is JobState.SUCCEEDED, done.last_error
    assert lines == ["hi"]


# -- the command line ---------------------------------------------------------------


async def zbrain(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `python -m zbrain ARGS` without blocking the loop the in-process server runs on."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zbrain",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), timeout=30)
    assert child.returncode is not None
    return child.returncode, stdout.decode(), stderr.decode()


async def test_cli_submits_over_tls_with_the_ca_flag(tls_server: ZBrainServer, pki: Pki) -> None:
    code, out, err = await zbrain(
        "submit", "--server", tls_server.address, "--tls-ca", str(pki.ca.cert), "--", "true"
    )

    assert code == 0, err
    job_id = out.strip()
    assert str(uuid.UUID(job_id)) == job_id, out
    async with await Client.connect(
        tls_server.address, tls=TlsFiles(ca=pki.ca.cert), timeout=5
    ) as client:
        assert (await client.get(job_id)).cmd == ("true",)


async def test_cli_takes_the_ca_from_the_environment(tls_server: ZBrainServer, pki: Pki) -> None:
    code, out, err = await zbrain(
        "submit",
        "--server",
        tls_server.address,
        "--",
        "true",
        env={"ZBRAIN_TLS_CA": str(pki.ca.cert)},
    )

    assert code == 0, err
    assert str(uuid.UUID(out.strip())) == out.strip(), out


async def test_cli_without_tls_flags_points_at_the_tls_settings(
    tls_server: ZBrainServer,
) -> None:
    code, out, err = await zbrain("submit", "--server", tls_server.address, "--", "true")

    assert code != 0, out
    assert "--tls-ca" in err, err


async def test_cli_serve_flags_turn_on_mutual_tls(
    processes: Processes, pki: Pki, tmp_path: Path
) -> None:
    _, address = processes.server(
        tmp_path / "served",
        "--tls-cert",
        str(pki.server.cert),
        "--tls-key",
        str(pki.server.key),
        "--tls-client-ca",
        str(pki.ca.cert),
    )

    async with await Client.connect(address, tls=our_client(pki), timeout=5) as client:
        job = await client.submit(["true"])
    assert job.state is JobState.PENDING
    await assert_refused(address, tls=TlsFiles(ca=pki.ca.cert))
