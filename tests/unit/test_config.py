"""Server configuration from environment variables, with flags on top."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from zbrain.durations import parse_duration
from zbrain.errors import InvalidArgumentError
from zbrain_server.config import Limits, ServerConfig


def test_no_variables_means_the_defaults() -> None:
    assert ServerConfig.from_env({}) == ServerConfig()


def test_empty_variables_count_as_unset() -> None:
    env = {"ZBRAIN_LEASE_TTL": "", "ZDEFAULT_ORG_ID": "", "ZBRAIN_MAX_RETRIES": ""}

    assert ServerConfig.from_env(env) == ServerConfig()


SETTINGS = [
    ("ZBRAIN_LISTEN", "0.0.0.0:6000", "listen", "0.0.0.0:6000"),
    ("ZDB_DATA", "/var/lib/zbrain", "data_dir", Path("/var/lib/zbrain")),
    ("ZBRAIN_ARTIFACTS", "/blobs", "artifacts_dir", Path("/blobs")),
    ("ZDEFAULT_ORG_ID", "acme", "default_org", "acme"),
    ("ZBRAIN_LEASE_TTL", "45", "lease_ttl_s", 45.0),
    ("ZBRAIN_POLL_INTERVAL", "250ms", "poll_interval_s", 0.25),
    ("ZBRAIN_MAX_RETRIES", "7", "default_max_retries", 7),
    ("ZBRAIN_MAX_RETRIES", "0", "default_max_retries", 0),
    ("ZBRAIN_DEFAULT_TIMEOUT", "2h", "default_timeout_s", 7200.0),
    ("ZBRAIN_RETRY_BASE", "2s", "retry_base_s", 2.0),
    ("ZBRAIN_RETRY_CAP", "10m", "retry_cap_s", 600.0),
    ("ZBRAIN_RETENTION", "30d", "retention_s", 30 * 86400.0),
]


@pytest.mark.parametrize(
    ("var", "value", "key", "expected"), SETTINGS, ids=[f"{v}={x}" for v, x, _, _ in SETTINGS]
)
def test_each_variable_sets_its_setting(var: str, value: str, key: str, expected: object) -> None:
    config = ServerConfig.from_env({var: value})

    assert getattr(config, key) == expected


def test_artifacts_live_in_the_data_dir_by_default() -> None:
    config = ServerConfig.from_env({"ZDB_DATA": "/data"})

    assert config.artifact_root == Path("/data/artifacts")


def test_an_artifacts_dir_replaces_the_default() -> None:
    config = ServerConfig.from_env({"ZDB_DATA": "/data", "ZBRAIN_ARTIFACTS": "/blobs"})

    assert config.artifact_root == Path("/blobs")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("1.5", 1.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1.5h", 5400.0),
        ("7d", 604800.0),
        (" 5 m ", 300.0),
    ],
)
def test_durations_take_units(text: str, seconds: float) -> None:
    assert ServerConfig.from_env({"ZBRAIN_LEASE_TTL": text}).lease_ttl_s == pytest.approx(seconds)
    assert parse_duration(text) == pytest.approx(seconds)


BAD_VALUES = [
    ({"ZBRAIN_LEASE_TTL": "soon"}, "ZBRAIN_LEASE_TTL"),
    ({"ZBRAIN_LEASE_TTL": "-5s"}, "ZBRAIN_LEASE_TTL"),
    ({"ZBRAIN_LEASE_TTL": "5 minutes"}, "ZBRAIN_LEASE_TTL"),
    ({"ZBRAIN_LEASE_TTL": "1e3"}, "ZBRAIN_LEASE_TTL"),
    ({"ZBRAIN_LEASE_TTL": "0"}, "ZBRAIN_LEASE_TTL"),
    ({"ZBRAIN_LEASE_TTL": "0ms"}, "ZBRAIN_LEASE_TTL"),
    ({"ZBRAIN_POLL_INTERVAL": "0s"}, "ZBRAIN_POLL_INTERVAL"),
    ({"ZBRAIN_POLL_INTERVAL": "fast"}, "ZBRAIN_POLL_INTERVAL"),
    ({"ZBRAIN_MAX_RETRIES": "three"}, "ZBRAIN_MAX_RETRIES"),
    ({"ZBRAIN_MAX_RETRIES": "2.5"}, "ZBRAIN_MAX_RETRIES"),
    ({"ZBRAIN_MAX_RETRIES": "-1"}, "ZBRAIN_MAX_RETRIES"),
    ({"ZBRAIN_MAX_RETRIES": "101"}, "ZBRAIN_MAX_RETRIES"),
    ({"ZBRAIN_DEFAULT_TIMEOUT": "0"}, "ZBRAIN_DEFAULT_TIMEOUT"),
    ({"ZBRAIN_DEFAULT_TIMEOUT": "8d"}, "ZBRAIN_DEFAULT_TIMEOUT"),
    ({"ZBRAIN_RETRY_BASE": "0"}, "ZBRAIN_RETRY_BASE"),
    ({"ZBRAIN_RETRY_BASE": "1m", "ZBRAIN_RETRY_CAP": "10s"}, "ZBRAIN_RETRY_CAP"),
    ({"ZBRAIN_RETENTION": "forever"}, "ZBRAIN_RETENTION"),
]


@pytest.mark.parametrize(
    ("env", "named"),
    BAD_VALUES,
    ids=[",".join(f"{k}={v}" for k, v in env.items()) for env, _ in BAD_VALUES],
)
def test_a_bad_value_is_refused_naming_its_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        ServerConfig.from_env(env)


def test_a_parse_error_quotes_the_bad_value() -> None:
    with pytest.raises(InvalidArgumentError, match="'three'"):
        ServerConfig.from_env({"ZBRAIN_MAX_RETRIES": "three"})


def test_a_count_that_is_not_a_whole_number_is_refused_in_words() -> None:
    with pytest.raises(InvalidArgumentError, match="'x' is not a whole number"):
        ServerConfig.from_env({"ZBRAIN_MAX_LABELS": "x"})


def test_byte_settings_take_sizes_with_units() -> None:
    config = ServerConfig.from_env(
        {"ZBRAIN_MAX_MESSAGE_BYTES": "4M", "ZBRAIN_EVENT_BUFFER_BYTES": "512K"}
    )
    assert config.limits.max_message_bytes == 4 << 20
    assert config.event_buffer_bytes == 512 << 10
    with pytest.raises(InvalidArgumentError, match=r"ZBRAIN_MAX_INPUT_BYTES='lots'.*not a size"):
        ServerConfig.from_env({"ZBRAIN_MAX_INPUT_BYTES": "lots"})


def test_overrides_win_over_the_environment() -> None:
    config = ServerConfig.from_env(
        {"ZBRAIN_LEASE_TTL": "10s", "ZDEFAULT_ORG_ID": "env-org"}, lease_ttl_s=3.0
    )

    assert config.lease_ttl_s == 3.0
    assert config.default_org == "env-org"


def test_unset_overrides_leave_the_environment_alone() -> None:
    config = ServerConfig.from_env({"ZBRAIN_LEASE_TTL": "10s"}, lease_ttl_s=None)

    assert config.lease_ttl_s == 10.0


def test_overrides_are_validated_too() -> None:
    with pytest.raises(InvalidArgumentError, match="ZBRAIN_LEASE_TTL"):
        ServerConfig.from_env({}, lease_ttl_s=0.0)


def test_an_empty_default_org_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="ZDEFAULT_ORG_ID"):
        ServerConfig.from_env({}, default_org="")


def test_every_problem_is_reported_at_once() -> None:
    env = {"ZBRAIN_LEASE_TTL": "0", "ZBRAIN_POLL_INTERVAL": "0", "ZBRAIN_MAX_RETRIES": "500"}

    with pytest.raises(InvalidArgumentError) as error:
        ServerConfig.from_env(env)

    for var in env:
        assert var in str(error.value)


@pytest.mark.parametrize("org", ["my org", "-leading-dash", "x" * 65])
def test_a_malformed_default_org_is_refused(org: str) -> None:
    with pytest.raises(InvalidArgumentError, match="ZDEFAULT_ORG_ID"):
        ServerConfig.from_env({"ZDEFAULT_ORG_ID": org})


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith(("ZBRAIN_", "ZDB_", "ZDEFAULT_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("ZBRAIN_LEASE_TTL", "2m")
    monkeypatch.setenv("ZDB_DATA", "/from/env")

    config = ServerConfig.from_env()

    assert (config.lease_ttl_s, config.data_dir) == (120.0, Path("/from/env"))


def test_the_store_is_sqlite_unless_a_postgresql_url_is_given() -> None:
    assert ServerConfig.from_env({}).store_url is None
    url = "postgresql://zb@db.internal:5432/jobs?schema=team"
    assert ServerConfig.from_env({"ZBRAIN_STORE": url}).store_url == url


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x@h/db",
        "zbrain-data",
        "postgresql://x@h:notaport/db",
        "postgresql://[::1",
        "postgresql://h/",
    ],
)
def test_a_store_that_is_not_a_postgresql_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="--store"):
        ServerConfig.from_env({"ZBRAIN_STORE": url})


@pytest.mark.parametrize(
    "address", ["nonsense", "127.0.0.1:99999", "127.0.0.1:abc", "127.0.0.1:", "::1:8080"]
)
def test_a_listen_address_that_is_not_host_port_is_refused(address: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"--http-listen .* from 0 to 65535"):
        ServerConfig.from_env({"ZBRAIN_HTTP_LISTEN": address})
    with pytest.raises(InvalidArgumentError, match=r"--listen .* from 0 to 65535"):
        ServerConfig.from_env({}, listen=address)


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:8080", "0.0.0.0:50051", ":8080"])
def test_host_port_listen_addresses_are_taken(address: str) -> None:
    assert ServerConfig.from_env({"ZBRAIN_HTTP_LISTEN": address}).http_listen == address


LIMIT_FIELDS = [spec.name for spec in dataclasses.fields(Limits)]


@pytest.mark.parametrize("name", LIMIT_FIELDS)
def test_every_limit_is_set_by_its_variable(name: str) -> None:
    # Large enough for the checks between settings (the default timeout is 1h).
    limits = ServerConfig.from_env({f"ZBRAIN_{name.upper()}": "900000"}).limits

    assert getattr(limits, name) == 900_000


@pytest.mark.parametrize("name", LIMIT_FIELDS)
def test_every_limit_is_documented_with_its_variable(name: str) -> None:
    documented = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()

    assert f"`ZBRAIN_{name.upper()}`" in documented
