"""Browser sessions: a token exchanged for an HttpOnly cookie, CSRF and
Origin checks on what changes things, signing out and revocation ending
sessions and their sockets at once."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import aiohttp

from zbrain.models import Role
from zbrain_server.core.model import now_us

from .conftest import Http, StartHttp


async def sign_in(http: Http, token: str) -> tuple[dict[str, str], str]:
    """Sign in; the Cookie header of the browser afterwards, and its CSRF value."""
    async with http.session.post(http.base + "/v1/session", json={"token": token}) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
        cookies = SimpleCookie()
        for header in response.headers.getall("Set-Cookie"):
            cookies.load(header)
    session = cookies["zbrain_session"]
    assert session["httponly"] and session["samesite"] == "Strict" and session["path"] == "/"
    assert not cookies["zbrain_csrf"]["httponly"]
    assert answer["csrfToken"] == cookies["zbrain_csrf"].value
    header = f"zbrain_session={session.value}; zbrain_csrf={cookies['zbrain_csrf'].value}"
    return {"Cookie": header}, answer["csrfToken"]


async def test_a_signed_in_browser_reads_with_its_cookie_and_writes_with_the_csrf_header(
    start_http: StartHttp,
) -> None:
    http = await start_http(auth="required")
    token = await http.token("team-a", Role.CLIENT)
    cookie, csrf = await sign_in(http, token)

    status, answer = await http.call("GET", "/v1/session", headers=cookie)
    assert answer["signedIn"] and answer["authRequired"]
    assert (answer["role"], answer["orgId"], answer["csrfToken"]) == ("client", "team-a", csrf)
    status, _ = await http.call("GET", "/v1/jobs", headers=cookie)
    assert status == 200
    submit = {"job": {"cmd": ["true"]}}
    status, answer = await http.call("POST", "/v1/jobs", submit, headers=cookie)
    assert (status, answer["code"]) == (403, 7)
    assert "X-ZBrain-CSRF" in answer["message"]
    status, answer = await http.call(
        "POST", "/v1/jobs", submit, headers={**cookie, "X-ZBrain-CSRF": "guess"}
    )
    assert status == 403
    status, answer = await http.call(
        "POST", "/v1/jobs", submit, headers={**cookie, "X-ZBrain-CSRF": csrf}
    )
    assert (status, answer["job"]["orgId"]) == (200, "team-a")


async def test_a_page_elsewhere_cannot_post_or_open_a_socket_with_the_cookie(
    start_http: StartHttp,
) -> None:
    http = await start_http(auth="required")
    cookie, csrf = await sign_in(http, await http.token("team-a", Role.CLIENT))
    elsewhere = {**cookie, "X-ZBrain-CSRF": csrf, "Origin": "https://evil.example"}
    status, answer = await http.call("POST", "/v1/jobs", {"job": {"cmd": ["x"]}}, headers=elsewhere)
    assert (status, answer["code"]) == (403, 7)
    async with http.websocket("/v1/events:stream", headers=elsewhere) as ws:
        assert (await ws.receive_json(timeout=10))["error"]["code"] == 7
        await ws.receive(timeout=10)
        assert ws.close_code == 4007
    same = {**cookie, "X-ZBrain-CSRF": csrf, "Origin": http.base}
    status, _ = await http.call("POST", "/v1/jobs", {"job": {"cmd": ["x"]}}, headers=same)
    assert status == 200


async def test_signing_out_ends_the_session_and_its_sockets_at_once(start_http: StartHttp) -> None:
    http = await start_http(auth="required")
    cookie, csrf = await sign_in(http, await http.token("team-a", Role.CLIENT))
    async with http.websocket("/v1/events:stream", headers=cookie) as ws:
        status, answer = await http.call(
            "DELETE", "/v1/session", headers={**cookie, "X-ZBrain-CSRF": csrf}
        )
        assert (status, answer["signedIn"]) == (200, False)
        assert (await ws.receive_json(timeout=5))["error"]["code"] == 16
        await ws.receive(timeout=5)
        assert ws.close_code == 4016
    status, answer = await http.call("GET", "/v1/jobs", headers=cookie)
    assert (status, answer["code"]) == (401, 16)


async def test_a_revoked_tokens_sessions_end_within_a_second(start_http: StartHttp) -> None:
    http = await start_http(auth="required")
    token = await http.token("team-a", Role.CLIENT)
    cookie, _ = await sign_in(http, token)
    async with http.websocket("/v1/events:stream", headers=cookie) as ws:
        token_id = token.split("_")[1]
        await http.server.store.revoke_token(token_id, now_us())
        revoked_at = time.monotonic()
        frame = await ws.receive_json(timeout=5)
        await ws.receive(timeout=5)
        # The server checks tokens every second; three allow for a busy machine
        # (without the check the socket would stay open: the receive times out).
        assert time.monotonic() - revoked_at < 3.0
        assert (frame["error"]["code"], ws.close_code) == (16, 4016)
    status, _ = await http.call("GET", "/v1/jobs", headers=cookie)
    assert status == 401


async def test_a_wrong_token_does_not_sign_in(start_http: StartHttp) -> None:
    http = await start_http(auth="required")
    status, answer = await http.call("POST", "/v1/session", {"token": "zbt_nope_nope"})
    assert (status, answer["code"]) == (401, 16)
    status, answer = await http.call("POST", "/v1/session", {"secret": "x"})
    assert (status, answer["code"]) == (400, 3)


async def test_without_auth_the_console_needs_no_sign_in(http: Http) -> None:
    status, answer = await http.call("GET", "/v1/session")
    assert (status, answer) == (200, {"authRequired": False, "signedIn": False})
    await http.submit(["true"])
    async with http.websocket("/v1/events:stream?follow=false") as ws:
        frame = await ws.receive_json(timeout=10)
        assert frame["events"][0]["jobSubmitted"]["cmd"] == ["true"]
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1000
