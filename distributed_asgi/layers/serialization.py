"""Message bytes: msgpack, optionally encrypted and authenticated with Fernet.

Every stored payload starts with one marker byte so a reader can tell the format (and refuse a
plain message when encryption is configured, which is how forged messages are rejected):

- ``M`` + msgpack: plain.
- ``F`` + Fernet token: encrypted with the first of ``symmetric_encryption_keys``; any key
  decrypts (rotation). Each key string is hashed with SHA-256 to make the Fernet key, as
  asgi_redis and channels_redis do.

No pickle anywhere: bytes stay bytes, str stays str, tuples come back as lists.

``max_message_size`` bounds a stored payload (marker included) on both sides: ``serialize``
refuses a bigger message with ``ValueError`` (the sender learns at once, instead of its receiver
silently dropping it), and ``deserialize`` drops a bigger one as ``BadMessage`` before unpacking
or decrypting it, so bytes pushed into a key by someone else cannot make a reader spend memory
and time on them.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgpack

from .base import Message
from .validate import require_size

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

__all__ = ["BadMessage", "MessageSerializer"]

# One msgpack packer per thread, kept: ``msgpack.packb`` makes a new one on every call, which
# costs a third of packing a frame. Per thread, as the layer is called from several (each
# ``async_to_sync`` call runs in a loop of its own thread).
_packers = threading.local()


def _packer() -> msgpack.Packer:
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    return packer


PLAIN = b"M"
ENCRYPTED = b"F"
# Far above any frame the gateway makes (response bodies travel in 128 KiB frames; uvicorn
# accepts WebSocket messages up to 16 MiB) and far below Redis's 512 MB value limit.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class BadMessage(ValueError):
    """Stored bytes that are not a message this layer can read: dropped, never delivered."""


class MessageSerializer:
    def __init__(
        self,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.max_message_size = require_size("max_message_size", max_message_size)
        self._crypter: MultiFernet | None = None
        if symmetric_encryption_keys:
            if isinstance(symmetric_encryption_keys, (str, bytes)):
                raise ValueError(
                    "symmetric_encryption_keys must be a list of keys, not a single "
                    f"{type(symmetric_encryption_keys).__name__}"
                )
            try:
                from cryptography.fernet import Fernet, MultiFernet
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "symmetric_encryption_keys needs the cryptography package: "
                    "pip install 'distributed-asgi[crypto]'"
                ) from exc
            fernets = []
            for index, key in enumerate(symmetric_encryption_keys):
                if not isinstance(key, (str, bytes)) or not key:
                    raise ValueError(
                        f"symmetric_encryption_keys[{index}] must be a non-empty str or bytes"
                    )
                raw = key.encode() if isinstance(key, str) else key
                fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
            self._crypter = MultiFernet(fernets)

    @property
    def encrypted(self) -> bool:
        return self._crypter is not None

    def serialize(self, message: Message) -> bytes:
        try:
            packed = _packer().pack(message)
        except (TypeError, ValueError, OverflowError) as exc:
            raise TypeError(f"message is not serializable with msgpack: {exc}") from exc
        if self._crypter is not None:
            data = ENCRYPTED + self._crypter.encrypt(packed)
        else:
            data = PLAIN + packed
        if self.max_message_size is not None and len(data) > self.max_message_size:
            raise ValueError(
                f"message of {len(data)} bytes is over max_message_size ({self.max_message_size})"
            )
        return data

    def deserialize(self, data: bytes) -> Message:
        if self.max_message_size is not None and len(data) > self.max_message_size:
            raise BadMessage(
                f"message of {len(data)} bytes is over max_message_size ({self.max_message_size})"
            )
        marker, body = data[:1], data[1:]
        if self._crypter is not None:
            if marker != ENCRYPTED:
                raise BadMessage("unencrypted message where encryption is required")
            from cryptography.fernet import InvalidToken

            try:
                body = self._crypter.decrypt(body)
            except InvalidToken:
                raise BadMessage("message does not decrypt with any configured key") from None
        elif marker != PLAIN:
            raise BadMessage(
                "encrypted message but no symmetric_encryption_keys configured"
                if marker == ENCRYPTED
                else f"unknown message format marker {marker!r}"
            )
        try:
            message = msgpack.unpackb(body, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise BadMessage(f"not valid msgpack: {exc.__class__.__name__}") from None
        if not isinstance(message, dict):
            raise BadMessage(f"message is a {type(message).__name__}, not a dict")
        return message
