"""Parsing the hosts option: every documented form, and clear errors at start-up."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from distributed_asgi.layers import RedisChannelLayer
from distributed_asgi.layers.hosts import mask_secret, parse_hosts


def test_default_is_localhost() -> None:
    (spec,) = parse_hosts(None)
    assert spec.kwargs == {"host": "localhost", "port": 6379}


@pytest.mark.parametrize(
    "host",
    [
        "redis://localhost:6379/0",
        "rediss://user:pw@redis.example:6380/1",
        "unix:///run/redis.sock?db=2",
        ("localhost", 6379),
        ["localhost", "6379"],
        {"host": "localhost", "port": 6379, "db": 3},
        {"address": "redis://localhost:6379", "socket_timeout": 3},
        {"address": ("localhost", 6379), "password": "pw"},
        {"sentinels": [("localhost", 26379)], "master_name": "mymaster", "db": 0},
    ],
)
def test_accepted_forms(host: object) -> None:
    (spec,) = parse_hosts([host])
    assert spec.identity
    spec.create_client()  # builds a client without connecting


def test_a_single_url_or_tuple_is_one_host() -> None:
    assert len(parse_hosts("redis://localhost:6379")) == 1
    assert len(parse_hosts(("localhost", 6379))) == 1


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "non-empty"),
        (["http://localhost"], "hosts\\[0\\] URL must start with redis://"),
        ([("localhost",)], "hosts\\[0\\] must be a \\(host, port\\) pair"),
        ([("localhost", "port")], "hosts\\[0\\] port must be a number, got 'port'"),
        ([("localhost", 70000)], "between 1 and 65535"),
        ([{"sentinels": [("a", 1)]}], "no 'master_name'"),
        ([42], "hosts\\[0\\] must be a URL"),
        (["redis://a:1", "redis://a:1"], "same server twice"),
    ],
)
def test_bad_hosts_fail_at_construction(hosts: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisChannelLayer(hosts=hosts)


def test_errors_do_not_leak_passwords() -> None:
    with pytest.raises(ValueError) as error:
        parse_hosts(["http://admin:topsecret@localhost"])
    assert "topsecret" not in str(error.value)
    assert mask_secret("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert mask_secret("redis://h:1/0?password=pw&db=1") == "redis://h:1/0?password=***&db=1"
    assert mask_secret("rediss://u:pw@h:1/0?ssl_password=kp&ssl_ca_certs=/ca.pem") == (
        "rediss://u:***@h:1/0?ssl_password=***&ssl_ca_certs=/ca.pem"
    )
    for bad in ({"redis://:pw-secret@h:1/0"}, [b"redis://u:pw-secret@h:1/0"]):
        with pytest.raises(ValueError) as error:
            parse_hosts(bad)
        assert "pw-secret" not in str(error.value) and "***" in str(error.value)
    spec = parse_hosts(["redis://u:pw-secret@h:1/0?password=pw-secret"])[0]
    assert "pw-secret" not in repr(spec) and "pw-secret" not in spec.describe()


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="capcity"):
        RedisChannelLayer(capcity=10)  # type: ignore[call-arg]


# Each form of one server, with a database argument.
DB_FORMS: dict[str, Callable[[int], object]] = {
    "url": lambda db: f"redis://localhost:6379/{db}",
    "unix url": lambda db: f"unix:///run/redis.sock?db={db}",
    "dict": lambda db: {"host": "localhost", "port": 6379, "db": db},
    "address url": lambda db: {"address": "redis://localhost:6379", "db": db},
    "address unix url": lambda db: {"address": "unix:///run/redis.sock", "db": db},
    "address pair": lambda db: {"address": ("localhost", 6379), "db": db},
    "sentinel": lambda db: {"sentinels": [("localhost", 26379)], "master_name": "m", "db": db},
}


@pytest.mark.parametrize("form", DB_FORMS.values(), ids=DB_FORMS.keys())
def test_entries_that_differ_only_in_db_are_different_servers(
    form: Callable[[int], object],
) -> None:
    specs = parse_hosts([form(0), form(1), form(2)])
    assert len({spec.identity for spec in specs}) == 3, [s.describe() for s in specs]
    dbs = [spec.create_client().connection_pool.connection_kwargs.get("db", 0) for spec in specs]
    assert [int(db) for db in dbs] == [0, 1, 2]
    with pytest.raises(ValueError, match="same server twice"):
        parse_hosts([form(1), form(1)])


def test_a_db_in_the_address_url_wins_over_the_db_argument() -> None:
    """As in redis-py's from_url: the URL's own database is the one connected to."""
    (spec,) = parse_hosts([{"address": "redis://localhost:6379/2", "db": 1}])
    assert spec.identity == "redis://localhost:6379/2"
    assert spec.create_client().connection_pool.connection_kwargs["db"] == 2
    with pytest.raises(ValueError, match="same server twice"):
        parse_hosts(["redis://localhost:6379/2", {"address": "redis://localhost:6379/2", "db": 1}])
    assert parse_hosts([{"address": "unix:///s", "db": 1}])[0].describe() == "unix:///s?db=1"
