"""The route table: DESIGN.md's contract, the seed's table, and start-up errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributed_asgi import RouteTable

SEED_ROUTES = {"/api/([a-z-]+)": r"API-\1", "/": "ALL-WEBSITE-TRAFFIC"}


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/api/test", "API-test"),
        ("/api/test/38", "API-test"),
        ("/api/banana", "API-banana"),
        ("/test/api/test2", "API-test"),
        ("/about", "ALL-WEBSITE-TRAFFIC"),
    ],
)
def test_seed_table(path: str, key: str) -> None:
    assert RouteTable(SEED_ROUTES).match(path) == key


def test_digits_route_gives_the_readme_key() -> None:
    assert RouteTable({"/api/([a-z0-9-]+)": r"API-\1"}).match("/test/api/test2") == "API-test2"


def test_first_matching_route_wins_in_order_given() -> None:
    table = RouteTable([("/", "catch-all"), ("/api/(x)", r"api-\1")])
    assert table.match("/api/x") == "catch-all"


def test_named_groups_and_pairs() -> None:
    table = RouteTable([(r"/worker/(?P<n>[0-9]+)", r"worker-queue-\g<n>")])
    assert table.match("/worker/12") == "worker-queue-12"


def test_no_match_is_none() -> None:
    assert RouteTable({"^/api/": "api"}).match("/static/x") is None


def test_group_text_that_is_not_a_channel_name_matches_nothing() -> None:
    assert RouteTable({"/u/(.+)": r"user-\1"}).match("/u/a b") is None


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ({"/api/(": "x"}, "invalid regular expression"),
        ({"/api/([a-z]+)": r"API-\2"}, "refers to group 2"),
        ({"/api/([a-z]+)": r"API-\g<name>"}, "refers to group 'name'"),
        ({"/api": "API key"}, "can never be a valid channel name"),
        ({"/api": "API!x"}, "can never be a valid channel name"),
        ({"/api": "x" * 100}, "longer than a channel name"),
        ({"/api": ""}, "can never be a valid channel name"),
    ],
)
def test_bad_routes_fail_at_construction_naming_the_route(
    routes: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        RouteTable(routes)
    regex = next(iter(routes))
    assert repr(regex) in str(info.value)


def test_empty_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one route"):
        RouteTable({})


@given(st.text(alphabet="/abz09-_.xw", max_size=30))
def test_expansion_agrees_with_match_expand(path: str) -> None:
    routes = [
        (r"/w/(?P<n>[0-9]+)/(x+)", r"q-\g<n>-\2.\1"),
        (r"/([a-z]*)([0-9]*)", r"k\2-\1\g<1>"),
        ("/", "all"),
    ]
    table = RouteTable(routes)
    for regex, template in routes:
        found = re.search(regex, path)
        if found is not None:
            expected = found.expand(template)
            valid = bool(re.fullmatch(r"[a-zA-Z\d\-_.]+", expected)) and len(expected) < 100
            assert table.match(path) == (expected if valid else None)
            return
    assert table.match(path) is None
