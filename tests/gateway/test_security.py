"""docs/security.md, tested: encryption keys reject forged and altered frames end to end, the
documented minimal ACL user is enough (and restricts), and TLS with CA verification works for
the layer and for a gateway request."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import redis
import redis.asyncio as aioredis

from distributed_asgi.core.frames import Accept, Connect, decode_frame, encode
from distributed_asgi.layers import ChannelFull, LayerUnavailable, RedisChannelLayer
from distributed_asgi.layers.serialization import MessageSerializer
from distributed_asgi.ops.redis_process import RedisProcess, free_port
from tests.gateway.fixtures import ROOT, Gateway

KEY = "test-encryption-key-" + "e" * 32
OTHER_KEY = "another-encryption-key-" + "o" * 32
ENCRYPTED: dict[str, Any] = {"symmetric_encryption_keys": [KEY]}
DOCS = Path(ROOT) / "docs" / "security.md"


def documented_acl(user: str, password: str, prefix: str) -> list[str]:
    """The ACL SETUSER line of docs/security.md, for this user, password and prefix."""
    match = re.search(r"^ACL SETUSER (\S+) (.+)$", DOCS.read_text(), re.MULTILINE)
    assert match, "docs/security.md lost its ACL SETUSER line"
    rules = match.group(2).replace(">PASSWORD", f">{password}").replace("~asgi:*", f"~{prefix}:*")
    return ["ACL", "SETUSER", user, *rules.split()]


# -- encryption, end to end --------------------------------------------------------------------


def connect_frame(path: str, reply: str = "edge.forged!x") -> dict[str, Any]:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": path.partition("?")[2].encode(),
        "root_path": "",
        "headers": [(b"host", b"forged")],
        "client": ("10.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    return encode(Connect("forged-1", scope, reply, time.time() + 30, 2.0))


def test_forged_and_altered_frames_are_rejected_with_keys(gateway: Gateway) -> None:
    gateway.start_edge(layer=ENCRYPTED, pickup_timeout=4)
    queue = f"{gateway.prefix}:q:fidelity"
    admin = redis.Redis.from_url(gateway.redis_url)
    try:
        # A real request's connect, taken out of Redis before any worker runs, one bit altered.
        outcome: dict[str, int] = {}
        request = threading.Thread(
            target=lambda: outcome.update(
                status=httpx.get(
                    gateway.url("/pid?sleep=0.01&marker=altered"), timeout=20
                ).status_code
            )
        )
        request.start()
        deadline = time.monotonic() + 5
        while not admin.llen(queue) and time.monotonic() < deadline:
            time.sleep(0.01)
        entry = admin.lpop(queue)
        assert isinstance(entry, bytes)
        header, _, payload = entry.partition(b"\n")
        assert payload.startswith(b"F") and b"/pid" not in payload  # encrypted at rest
        altered = bytearray(payload)
        altered[len(altered) // 2] ^= 0x01
        # A forger with Redis access but no key: a plain frame, and one under another key.
        forged_plain = b"M" + msgpack.packb(
            connect_frame("/pid?sleep=0.01&marker=forged"), use_bin_type=True
        )
        forged_other = MessageSerializer([OTHER_KEY]).serialize(
            connect_frame("/pid?sleep=0.01&marker=other-key")
        )
        for bad in (bytes(altered), forged_plain, forged_other):
            admin.rpush(queue, header + b"\n" + bad)
        _, log = gateway.start_node(layer=ENCRYPTED)
        request.join()
        assert outcome["status"] == 503  # nobody ran the altered connect
        # The worker keeps serving requests made with the key.
        response = httpx.get(gateway.url("/pid?sleep=0.01&marker=real"), timeout=10)
        assert response.status_code == 200
    finally:
        admin.close()
    text = log.read_text()
    assert "dropped a message on fidelity: message does not decrypt with any configured key" in (
        text
    )
    assert text.count("does not decrypt with any configured key") == 2  # altered + other key
    assert "dropped a message on fidelity: unencrypted message where encryption is required" in (
        text
    )
    assert gateway.marker("real").exists()
    for name in ("altered", "forged", "other-key"):
        assert not gateway.marker(name).exists(), name


async def test_a_forged_response_never_reaches_the_client(gateway: Gateway) -> None:
    """The edge's reply channel: a forger who learned its name cannot answer in its place."""
    gateway.start_edge(layer=ENCRYPTED, pickup_timeout=3)
    # The test reads the connect with the key only to learn the reply channel's name (a forger
    # could read it from the entry headers in the reply queue).
    holder = RedisChannelLayer(hosts=[gateway.redis_url], prefix=gateway.prefix, **ENCRYPTED)
    forger = RedisChannelLayer(hosts=[gateway.redis_url], prefix=gateway.prefix)
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            request = asyncio.ensure_future(http.get(gateway.url("/hello")))
            connect = decode_frame(await asyncio.wait_for(holder.receive("fidelity"), 10))
            assert isinstance(connect, Connect)
            forged = encode(
                Accept(
                    connect.conn_id,
                    "node.forged!x",
                    2.0,
                    [
                        {"type": "http.response.start", "status": 200, "headers": []},
                        {"type": "http.response.body", "body": b"forged"},
                    ],
                )
            )
            await forger.send(connect.reply_channel, forged)
            response = await asyncio.wait_for(request, 15)
    finally:
        await holder.close()
        await forger.close()
    assert response.status_code == 503
    assert b"forged" not in response.content
    assert "unencrypted message where encryption is required" in gateway.logs()


# -- a restricted ACL user ---------------------------------------------------------------------


@pytest.fixture
def acl_server(redis_factory: Any, prefix: str) -> Iterator[tuple[RedisProcess, str]]:
    """A server with the documented user for ``prefix``; yields it and the user's URL."""
    server = redis_factory()
    admin = redis.Redis.from_url(server.url)
    admin.execute_command(*documented_acl("gateway", "acl-secret-password", prefix))  # type: ignore[no-untyped-call]
    admin.close()
    yield server, f"redis://gateway:acl-secret-password@127.0.0.1:{server.port}/0"


async def test_the_documented_acl_is_enough_for_the_layer(
    acl_server: tuple[RedisProcess, str], prefix: str
) -> None:
    _, url = acl_server
    layer = RedisChannelLayer(hosts=[url], prefix=prefix)
    try:
        me = await layer.new_channel()
        await layer.send("acl.normal", {"n": 1})
        assert await asyncio.wait_for(layer.receive("acl.normal"), 5) == {"n": 1}
        await layer.group_add("acl-group", me)
        await layer.group_send("acl-group", {"n": 2})
        assert await asyncio.wait_for(layer.receive(me), 5) == {"n": 2}
        await layer.group_discard("acl-group", me)
        # A send over a normal channel's capacity is decided by the OVERFLOW script (LLEN,
        # LINDEX, LREM), a normal-channel member over capacity by group_send's (RPOP).
        full = RedisChannelLayer(hosts=[url], prefix=prefix, capacity=1)
        await full.send("acl.full", {"n": 0})
        with pytest.raises(ChannelFull):
            await full.send("acl.full", {"n": 1})
        await full.group_add("acl-full", "acl.full")
        await full.group_send("acl-full", {"n": 2})  # skipped: at capacity
        assert await asyncio.wait_for(full.receive("acl.full"), 5) == {"n": 0}
        await full.close()
        # A cancelled receive of a normal channel puts what it popped back (REQUEUE script).
        await layer.send("acl.normal", {"n": 3})
        assert await asyncio.wait_for(layer.receive("acl.normal"), 5) == {"n": 3}
        # Expired members are removed inside group_send (ZRANGEBYSCORE, HDEL, ZREMRANGEBYSCORE).
        # (The second group_add renews the group's keys, so the first member goes stale while
        # the group still exists.)
        expiring = RedisChannelLayer(hosts=[url], prefix=prefix, group_expiry=0.5)
        other = await expiring.new_channel()
        await expiring.group_add("acl-expiring", me)
        await asyncio.sleep(0.3)
        await expiring.group_add("acl-expiring", other)
        await asyncio.sleep(0.3)
        await expiring.group_send("acl-expiring", {"n": 4})
        assert await asyncio.wait_for(expiring.receive(other), 5) == {"n": 4}
        await expiring.close()
        await layer.flush()
    finally:
        await layer.close()
    # And the user can do nothing else.
    user = aioredis.Redis.from_url(url)
    try:
        for command in (
            ("GET", "other:key"),
            ("APPEND", f"{prefix}:q:x", "1"),  # APPEND is not among the commands
            ("FLUSHALL",),
            ("KEYS", "*"),
            ("CONFIG", "GET", "*"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                await user.execute_command(*command)  # type: ignore[no-untyped-call]
        with pytest.raises(redis.exceptions.NoPermissionError):
            await user.rpush("other:q:x", b"1")  # an allowed command, a key outside the prefix
    finally:
        await user.aclose()


def test_gateway_request_as_the_documented_acl_user(
    acl_server: tuple[RedisProcess, str], prefix: str, tmp_path: Path
) -> None:
    _, url = acl_server
    gateway = Gateway(url, prefix, tmp_path)
    try:
        gateway.start_edge()
        gateway.start_node()
        with httpx.Client(base_url=gateway.url(), timeout=10) as http:
            assert http.get("/hello").text == "hello, world"
            assert http.post("/echo", content=b"x" * 300_000).content == b"x" * 300_000
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "distributed_asgi",
                "status",
                "--redis",
                url,
                "--prefix",
                prefix,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "fidelity" in status.stdout or "Route channels" in status.stdout
        logs = gateway.logs() + status.stdout + status.stderr
        assert "no permissions" not in logs.lower() and "NOPERM" not in logs, logs
    finally:
        gateway.stop()


# -- TLS ---------------------------------------------------------------------------------------


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that did not sign the server's certificate


def _make_certificates(directory: Path) -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def make_ca(label: str) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(label))
            .issuer_name(name(label))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def pem(cert: Any) -> bytes:
        data: bytes = cert.public_bytes(serialization.Encoding.PEM)
        return data

    ca_key, ca_cert = make_ca("distributed-asgi test CA")
    _, other_cert = make_ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "o.pem",
    )
    paths.ca.write_bytes(pem(ca_cert))
    paths.other_ca.write_bytes(pem(other_cert))
    paths.cert.write_bytes(pem(server_cert))
    paths.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Certificates]]:
    """redis-server with a TLS port (certificate made now); yields the TLS port and the files.

    The plain port stays open only because RedisProcess checks readiness with a plain PING;
    every test here talks to the TLS port.
    """
    certificates = _make_certificates(tmp_path_factory.mktemp("tls"))
    tls_port = free_port()
    server = RedisProcess(
        args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(certificates.cert),
            "--tls-key-file",
            str(certificates.key),
            "--tls-ca-cert-file",
            str(certificates.ca),
            "--tls-auth-clients",
            "no",
        ]
    )
    try:
        server.start()
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server was built without TLS: {exc}")
        raise
    yield tls_port, certificates
    server.close()


def _tls_url(port: int, ca: Path) -> str:
    return f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"


async def test_layer_over_tls_verifies_the_server(
    tls_server: tuple[int, Certificates], prefix: str
) -> None:
    port, certificates = tls_server
    by_url = RedisChannelLayer(hosts=[_tls_url(port, certificates.ca)], prefix=prefix)
    by_dict = RedisChannelLayer(
        hosts=[{"address": f"rediss://127.0.0.1:{port}/0", "ssl_ca_certs": str(certificates.ca)}],
        prefix=prefix,
    )
    untrusting = RedisChannelLayer(hosts=[_tls_url(port, certificates.other_ca)], prefix=prefix)
    try:
        await by_url.send("tls.test", {"secret": b"over tls"})
        assert await asyncio.wait_for(by_dict.receive("tls.test"), 5) == {"secret": b"over tls"}
        me = await by_dict.new_channel()
        await by_url.send(me, {"n": 1})
        assert await asyncio.wait_for(by_dict.receive(me), 5) == {"n": 1}
        # Verification is real: a client trusting another CA cannot connect.
        with pytest.raises(LayerUnavailable, match="certificate verify failed"):
            await untrusting.send("tls.test", {"n": 2})
    finally:
        for layer in (by_url, by_dict, untrusting):
            await layer.close()


def test_the_tls_port_speaks_only_tls(tls_server: tuple[int, Certificates]) -> None:
    port, certificates = tls_server
    # A plain-text PING gets no PONG: the port is TLS only, so the tests above used TLS.
    with socket.create_connection(("127.0.0.1", port), timeout=2) as plain:
        plain.sendall(b"PING\r\n")
        try:
            answer = plain.recv(64)
        except (TimeoutError, ConnectionResetError):
            answer = b""
    assert not answer.startswith(b"+PONG")
    verified = redis.Redis.from_url(_tls_url(port, certificates.ca), socket_timeout=5)
    assert verified.ping() is True
    verified.close()


def test_gateway_request_over_tls(
    tls_server: tuple[int, Certificates], prefix: str, tmp_path: Path
) -> None:
    port, certificates = tls_server
    gateway = Gateway(_tls_url(port, certificates.ca), prefix, tmp_path)
    try:
        gateway.start_edge()
        gateway.start_node()
        with httpx.Client(base_url=gateway.url(), timeout=10) as http:
            assert http.get("/hello").text == "hello, world"
            assert http.post("/echo", content=b"y" * 200_000).content == b"y" * 200_000
    finally:
        gateway.stop()
