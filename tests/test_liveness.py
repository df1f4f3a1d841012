"""distributed_asgi/_liveness.py: alive frames name the connections their sender holds.

Two ``Liveness`` watches over one ``InMemoryChannelLayer`` stand for an edge and a Node; the
connections are plain objects. What is tested is the judging: a connection the peer's later
rounds do not list is dropped, one they list (or that was made after the round) is not.
"""

from __future__ import annotations

import asyncio

from distributed_asgi._liveness import Liveness
from distributed_asgi.layers import InMemoryChannelLayer

INTERVAL = 0.05


class Watch:
    def __init__(self, layer: InMemoryChannelLayer, prefix: str) -> None:
        self.lost: list[str] = []
        self.dropped: list[str] = []
        self.liveness: Liveness[str] = Liveness(
            layer,
            prefix,
            INTERVAL,
            lambda connection, window: self.lost.append(connection),
            self.dropped.append,
        )


class SlowChannels(InMemoryChannelLayer):
    """A layer whose ``new_channel`` waits, as the Redis layer's may: connections that come
    together all ask for the liveness channel before the first has it."""

    async def new_channel(self, prefix: str = "specific") -> str:
        await asyncio.sleep(0.01)
        return await super().new_channel(prefix)


async def test_connections_that_come_together_share_one_liveness_channel() -> None:
    watch = Watch(SlowChannels(), "edge")
    try:
        channels = await asyncio.gather(*(watch.liveness.channel() for _ in range(3)))
        assert len(set(channels)) == 1
        assert watch.liveness.name == channels[0]
    finally:
        await watch.liveness.aclose()


async def _pair() -> tuple[Watch, Watch, str, str]:
    layer = InMemoryChannelLayer()
    edge, node = Watch(layer, "edge"), Watch(layer, "node")
    return edge, node, await edge.liveness.channel(), await node.liveness.channel()


async def test_a_connection_the_peer_no_longer_lists_is_dropped() -> None:
    edge, node, edge_channel, node_channel = await _pair()
    try:
        window = INTERVAL * 20
        # Both sides hold "c1" (as after an accept); the Node then lets go of it silently,
        # as when its frames were lost.
        edge.liveness.attach("c1", node_channel, window, "c1", after=node.liveness.round)
        node.liveness.attach("c1", edge_channel, window, "c1", after=edge.liveness.round)
        node.liveness.attach("c2", edge_channel, window, "c2", after=edge.liveness.round)
        edge.liveness.attach("c2", node_channel, window, "c2", after=node.liveness.round)
        await asyncio.sleep(INTERVAL * 4)
        assert edge.dropped == [] and node.dropped == []
        node.liveness.detach("c1", edge_channel)
        await asyncio.sleep(INTERVAL * 4)
        assert "c1" in edge.dropped
        assert "c2" not in edge.dropped and node.dropped == []
        assert edge.lost == [] and node.lost == []  # both processes are alive throughout
    finally:
        await edge.liveness.aclose()
        await node.liveness.aclose()


async def test_rounds_from_before_a_connection_do_not_judge_it() -> None:
    edge, node, edge_channel, node_channel = await _pair()
    try:
        window = INTERVAL * 20
        node.liveness.attach("old", edge_channel, window, "old", after=edge.liveness.round)
        edge.liveness.attach("old", node_channel, window, "old", after=node.liveness.round)
        await asyncio.sleep(INTERVAL * 3)
        # "new" is judged only after a round later than the given one, and the edge lists it
        # while it is being picked up (held, before it knows its Node).
        edge.liveness.hold("new")
        node.liveness.attach("new", edge_channel, window, "new", after=edge.liveness.round)
        await asyncio.sleep(INTERVAL * 4)
        assert node.dropped == []
        edge.liveness.let_go("new")
        await asyncio.sleep(INTERVAL * 4)
        assert node.dropped.count("new") >= 1 and "old" not in node.dropped
    finally:
        await edge.liveness.aclose()
        await node.liveness.aclose()


async def test_a_connection_without_a_round_is_never_judged() -> None:
    edge, node, edge_channel, node_channel = await _pair()
    try:
        window = INTERVAL * 20
        edge.liveness.attach("c", node_channel, window, "c", after=None)
        node.liveness.attach("other", edge_channel, window, "other", after=None)
        edge.liveness.attach("other", node_channel, window, "other", after=None)
        await asyncio.sleep(INTERVAL * 4)
        assert edge.dropped == [] and edge.lost == []
    finally:
        await edge.liveness.aclose()
        await node.liveness.aclose()
