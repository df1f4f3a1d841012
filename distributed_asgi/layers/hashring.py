"""Consistent hashing of names onto shards. Pure, no I/O.

Each shard owns ``replicas`` points on a 32-bit ring placed by hashing the shard's identity, so
adding a fourth host to three moves about a quarter of the names, and reordering the host list
moves none (unlike ``crc32(name) % len(hosts)``, which moves most names on any change).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

__all__ = ["HashRing"]


def _point(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=4).digest(), "big")


class HashRing:
    def __init__(self, identities: Sequence[str], replicas: int = 160) -> None:
        if not identities:
            raise ValueError("a hash ring needs at least one shard")
        if len(set(identities)) != len(identities):
            raise ValueError(f"shard identities must be distinct, got {list(identities)!r}")
        self.size = len(identities)
        points: list[tuple[int, int]] = []
        for index, identity in enumerate(identities):
            points.extend((_point(f"{identity}#{r}"), index) for r in range(replicas))
        points.sort()
        self._keys = [p for p, _ in points]
        self._shards = [s for _, s in points]
        self._cache: dict[str, int] = {}

    def shard_for(self, name: str) -> int:
        if self.size == 1:
            return 0
        shard = self._cache.get(name)
        if shard is None:
            at = bisect.bisect(self._keys, _point(name)) % len(self._keys)
            shard = self._shards[at]
            if len(self._cache) < 100_000:
                self._cache[name] = shard
        return shard
