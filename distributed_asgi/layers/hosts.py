"""Turn the ``hosts`` option into Redis clients, validating it at start-up.

Accepted forms, as users know them from asgi_redis and channels_redis:

- a URL: ``redis://[:password@]host[:port][/db]``, ``rediss://...`` (TLS), ``unix:///path?db=0``
- a ``(host, port)`` tuple or list
- a dict of ``redis.asyncio.Redis`` keyword arguments, or with ``"address"`` a URL plus keyword
  arguments (``{"address": "rediss://...", "ssl_cert_reqs": None}``)
- a Sentinel dict: ``{"sentinels": [(host, port), ...], "master_name": "mymaster",
  "sentinel_kwargs": {...}, **connection_kwargs}``
- a Redis Cluster: ``redis+cluster://[:password@]host:port[,host:port...]`` (``rediss+cluster``
  for TLS), alone or as a dict's ``"address"``, or ``{"startup_nodes": [(host, port), ...],
  **connection_kwargs}`` (``"ssl": True`` for TLS); the nodes listed are only where discovery
  starts, the layer finds every master itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["HostSpec", "parse_hosts", "single_host"]

_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# redis-py 8 defaults to 5 s; readers block for half the socket timeout at most.
DEFAULT_SOCKET_TIMEOUT = 10.0


@dataclass(frozen=True)
class HostSpec:
    """One shard's connection settings. ``identity`` places it on the hash ring."""

    identity: str
    url: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # The dataclass repr would show the URL and connection arguments, passwords included.
        return f"<HostSpec {self.describe()}>"

    @property
    def cluster(self) -> bool:
        """A Redis Cluster entry: one entry for all its masters (see cluster.py)."""
        return self.url is not None and self.url.split("://", 1)[0] in CLUSTER_SCHEMES

    def startup_nodes(self) -> list[tuple[str, int]]:
        """The (host, port) pairs of a cluster URL, where topology discovery starts."""
        assert self.url is not None
        netloc = self.url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        nodes = []
        for node in netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = node.rpartition(":")
            nodes.append((host.strip("[]") or "localhost", int(port or 6379)))
        return nodes

    def node_spec(self, host: str, port: int) -> HostSpec:
        """The spec of one cluster node: this entry's credentials, TLS and options, that node."""
        assert self.url is not None
        scheme, rest = self.url.split("://", 1)
        netloc, sep, tail = rest.partition("/")
        auth = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
        where = f"[{host}]" if ":" in host else host
        url = f"{scheme.split('+', 1)[0]}://{auth}{where}:{port}{sep}{tail}"
        return HostSpec(identity=f"{scheme}://{where}:{port}", url=url, kwargs=self.kwargs)

    @property
    def socket_timeout(self) -> float | None:
        value = self.kwargs.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        return float(value) if value else None

    def create_client(self) -> aioredis.Redis:
        """A new client with its own connection pool (call once per event loop)."""
        options: dict[str, Any] = {
            # Fail fast on a dead server, but ride over one stale pooled connection after a
            # restart: one quick retry, never the default multi-second backoff.
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "socket_connect_timeout": 2.0,
            "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
            "health_check_interval": 30,
            **self.kwargs,
            # Payloads are bytes; decoding is the serializer's job.
            "decode_responses": False,
        }
        if self.sentinels:
            from redis.asyncio.sentinel import Sentinel

            # Untyped before redis-py 8.2, typed from it: the ignore holds for both.
            sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
                list(self.sentinels), sentinel_kwargs=dict(self.sentinel_kwargs), **options
            )
            assert self.master_name is not None
            master: aioredis.Redis = sentinel.master_for(self.master_name)
            return master
        if self.url is not None:
            client: aioredis.Redis = aioredis.Redis.from_url(self.url, **options)
            return client
        return aioredis.Redis(**options)

    def describe(self) -> str:
        """The identity with any password masked, for logs and error messages."""
        return mask_secret(self.identity)


def mask_secret(url: str) -> str:
    """``url`` with its password masked: in the netloc, and in query arguments such as
    ``?password=`` or ``?ssl_password=`` (redis-py takes any connection argument there)."""
    parts = urlsplit(url)
    if parts.password is None and "password" not in parts.query.lower():
        return url  # as given (urlunsplit would turn unix:///path into unix:/path)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[-1]
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{netloc}")
    if "password" in parts.query.lower():
        arguments = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(k, "***" if "password" in k.lower() else v) for k, v in arguments]
        parts = parts._replace(query=urlencode(masked, safe="*/:"))
    return urlunsplit(parts)


# A password in the repr of a value that is not a URL (bytes, a set of URLs, a dict).
_URL_PASSWORD = re.compile(r"(://[^:/@\s'\"]*:)[^@\s'\"]*@")
_PASSWORD_ITEM = re.compile(r"""(['"][a-z_]*password['"]\s*:\s*)(['"]).*?\2""", re.IGNORECASE)


def _masked_repr(value: object) -> str:
    text = _URL_PASSWORD.sub(r"\1***@", repr(value))
    return _PASSWORD_ITEM.sub(r"\1'***'", text)


def parse_hosts(hosts: object) -> list[HostSpec]:
    if hosts is None:
        hosts = [("localhost", 6379)]
    if isinstance(hosts, (str, Mapping)) or (
        isinstance(hosts, tuple) and len(hosts) == 2 and isinstance(hosts[1], int)
    ):
        hosts = [hosts]
    if not isinstance(hosts, Sequence) or not hosts:
        raise ValueError(
            f"hosts must be a non-empty list of host configurations, got {_masked_repr(hosts)}"
        )
    specs = [_parse_host(host, index) for index, host in enumerate(hosts)]
    if len(specs) > 1 and any(spec.cluster for spec in specs):
        raise ValueError(
            "a Redis Cluster must be the only entry in hosts (the cluster shards by itself), "
            f"got {[spec.describe() for spec in specs]}"
        )
    seen: set[str] = set()
    for spec in specs:
        if spec.identity in seen:
            raise ValueError(f"hosts lists the same server twice: {spec.describe()}")
        seen.add(spec.identity)
    return specs


def _parse_host(host: object, index: int) -> HostSpec:
    where = f"hosts[{index}]"
    if isinstance(host, str):
        return HostSpec(identity=_check_url(host, where), url=host)
    if isinstance(host, (tuple, list)):
        if len(host) != 2 or not isinstance(host[0], str):
            raise ValueError(f"{where} must be a (host, port) pair, got {host!r}")
        port = _check_port(host[1], where)
        return HostSpec(
            identity=f"redis://{host[0]}:{port}", kwargs={"host": host[0], "port": port}
        )
    if isinstance(host, Mapping):
        options = dict(host)
        if "sentinels" in options:
            sentinels = options.pop("sentinels")
            master_name = options.pop("master_name", None)
            if not isinstance(master_name, str) or not master_name:
                raise ValueError(f"{where} has 'sentinels' but no 'master_name'")
            if not isinstance(sentinels, Sequence) or not sentinels:
                raise ValueError(f"{where}['sentinels'] must be a list of (host, port) pairs")
            pairs = []
            for pair in sentinels:
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ValueError(f"{where}['sentinels'] entry {pair!r} is not (host, port)")
                pairs.append((str(pair[0]), _check_port(pair[1], where)))
            sentinel_kwargs = options.pop("sentinel_kwargs", None) or {}
            identity = "sentinel://" + ",".join(f"{h}:{p}" for h, p in pairs) + f"/{master_name}"
            if options.get("db"):  # the master's database: another db is another server here
                identity += f"?db={options['db']}"
            return HostSpec(
                identity=identity,
                kwargs=options,
                sentinels=tuple(pairs),
                master_name=master_name,
                sentinel_kwargs=sentinel_kwargs,
            )
        if "startup_nodes" in options:
            # The cluster as a dict: {"startup_nodes": [(host, port), ...], **connection args}.
            nodes = options.pop("startup_nodes")
            if not isinstance(nodes, Sequence) or isinstance(nodes, str) or not nodes:
                raise ValueError(f"{where}['startup_nodes'] must be a list of (host, port) pairs")
            addresses: list[str] = []
            for pair in nodes:
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ValueError(f"{where}['startup_nodes'] entry {pair!r} is not (host, port)")
                host_name = str(pair[0])
                where_host = f"[{host_name}]" if ":" in host_name else host_name
                addresses.append(f"{where_host}:{_check_port(pair[1], where)}")
            scheme = "rediss+cluster" if options.pop("ssl", False) else "redis+cluster"
            url = f"{scheme}://{','.join(addresses)}"
            return HostSpec(identity=url, url=url, kwargs=options)
        if "address" in options:
            address = options.pop("address")
            if isinstance(address, (tuple, list)):
                spec = _parse_host(address, index)
                identity = spec.identity + (f"/{options['db']}" if options.get("db") else "")
                return HostSpec(identity=identity, kwargs={**spec.kwargs, **options})
            if not isinstance(address, str):
                raise ValueError(f"{where}['address'] must be a URL, got {address!r}")
            identity = _with_db(_check_url(address, where), options.get("db"))
            return HostSpec(identity=identity, url=address, kwargs=options)
        hostname = options.get("host", "localhost")
        if "unix_socket_path" in options:
            identity = f"unix://{options['unix_socket_path']}"
        else:
            options["port"] = _check_port(options.get("port", 6379), where)
            identity = f"redis://{hostname}:{options['port']}"
        if options.get("db"):
            identity += f"/{options['db']}"
        return HostSpec(identity=identity, kwargs=options)
    raise ValueError(
        f"{where} must be a URL, a (host, port) pair or a dict, got {type(host).__name__}: "
        f"{_masked_repr(host)}"
    )


def _with_db(url: str, db: object) -> str:
    """The identity of ``url`` used with a ``db`` argument: the database redis-py connects to
    (the URL's own, when it names one, wins, as in ``Redis.from_url``)."""
    parts = urlsplit(url)
    if not db or parts.scheme in CLUSTER_SCHEMES:
        return url
    arguments = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "db" for name, _ in arguments):
        return url
    if parts.scheme == "unix":
        return f"{url}{'&' if parts.query else '?'}db={db}"
    if parts.path.strip("/"):
        return url
    return urlunsplit(parts._replace(path=f"/{db}"))


def _check_url(url: str, where: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ValueError(
            f"{where} URL must start with redis://, rediss:// or unix:// (redis+cluster:// or "
            f"rediss+cluster:// for a Redis Cluster), got {mask_secret(url)!r}"
        )
    if scheme in CLUSTER_SCHEMES:
        rest = url.split("://", 1)[1]
        netloc, _, path = rest.partition("/")
        path = path.split("?", 1)[0]
        if path not in ("", "0"):
            raise ValueError(f"{where}: a Redis Cluster has only database 0, got {path!r}")
        for node in netloc.rsplit("@", 1)[-1].split(","):
            host, colon, port = node.rpartition(":")
            if not colon or not host:
                raise ValueError(f"{where}: cluster node {node!r} is not host:port")
            _check_port(port, where)
    return url


def _check_port(port: object, where: str) -> int:
    try:
        value = int(str(port))
    except (TypeError, ValueError):
        raise ValueError(f"{where} port must be a number, got {port!r}") from None
    if not 0 < value < 65536:
        raise ValueError(f"{where} port must be between 1 and 65535, got {port!r}")
    return value


def single_host(
    hosts: object,
    host: str | None,
    port: int | str | None,
    db: int | None,
    password: str | None,
) -> object:
    """``hosts``, or the one server named asgi_redis style (``host="redis", db=4``)."""
    if host is None and port is None and db is None and password is None:
        return hosts
    if hosts is not None:
        raise ValueError("pass either hosts or host/port/db/password, not both")
    single: dict[str, Any] = {"host": host or "localhost", "port": port or 6379}
    if db is not None:
        single["db"] = db
    if password is not None:
        single["password"] = password
    return [single]
