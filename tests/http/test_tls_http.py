"""The HTTP port under the gRPC port's TLS settings: HTTPS with the same
certificate, client certificates when a client CA is set, Secure cookies."""

from __future__ import annotations

import ssl
from http.cookies import SimpleCookie

import aiohttp
import pytest

from tests.integration.test_tls import Pki, pki  # noqa: F401 - the certificates fixture
from zbrain.models import Role

from .conftest import StartHttp


def trusting(pki: Pki, with_certificate: bool = False) -> ssl.SSLContext:  # noqa: F811
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if with_certificate:
        context.load_cert_chain(pki.client.cert, pki.client.key)
    return context


async def test_https_serves_the_api_and_sets_secure_cookies(
    start_http: StartHttp,
    pki: Pki,  # noqa: F811
) -> None:
    http = await start_http(tls_cert=pki.server.cert, tls_key=pki.server.key, auth="required")
    assert http.base.startswith("https://")
    token = await http.token("team-a", Role.CLIENT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting(pki))) as tls:
        async with tls.post(http.base + "/v1/session", json={"token": token}) as response:
            assert response.status == 200
            cookies = SimpleCookie()
            for header in response.headers.getall("Set-Cookie"):
                cookies.load(header)
            assert cookies["zbrain_session"]["secure"] and cookies["zbrain_csrf"]["secure"]
        headers = {"Authorization": f"Bearer {token}"}
        async with tls.get(http.base + "/v1/jobs", headers=headers) as response:
            assert response.status == 200
    with pytest.raises(aiohttp.ClientError):  # a client that does not trust the CA
        await http.call("GET", "/v1/jobs", token=token)
    plain = http.base.replace("https://", "http://")
    with pytest.raises(aiohttp.ClientError):
        async with http.session.get(plain + "/v1/jobs"):
            pass


async def test_with_a_client_ca_https_needs_a_client_certificate(
    start_http: StartHttp,
    pki: Pki,  # noqa: F811
) -> None:
    http = await start_http(
        tls_cert=pki.server.cert, tls_key=pki.server.key, tls_client_ca=pki.ca.cert
    )
    with pytest.raises(aiohttp.ClientError):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusting(pki))) as tls,
            tls.get(http.base + "/v1/jobs") as response,
        ):
            await response.read()
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=trusting(pki, with_certificate=True))
        ) as tls,
        tls.get(http.base + "/v1/jobs") as response,
    ):
        assert response.status == 200
