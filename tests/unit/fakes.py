"""The in-memory Kafka of ``rnnwatch.consumer.testing`` under the names these tests use, and a shorthand
for the real ``Service`` over it."""

from __future__ import annotations

from typing import Any

from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import Settings
from rnnwatch.consumer.testing import (
    MemoryCluster as FakeCluster,
)
from rnnwatch.consumer.testing import (
    MemoryProducer as FakeProducer,
)
from rnnwatch.consumer.testing import (
    MemoryReader as FakeReader,
)
from rnnwatch.consumer.testing import (
    MemorySource as FakeSource,
)
from rnnwatch.consumer.testing import (
    MemoryTransport,
    Script,
)

__all__ = ["FakeCluster", "FakeProducer", "FakeReader", "FakeService", "FakeSource"]


class FakeService(Service):
    """The real service built with a :class:`MemoryTransport`; ``reader`` and ``producer`` are its clients."""

    def __init__(self, settings: Settings, *, cluster: FakeCluster, producer: FakeProducer | None = None,
                 script: Script | None = None, owned: set[int] | None = None, join_polls: int = 0,
                 **kwargs: Any) -> None:
        transport = MemoryTransport(cluster, group=settings.group_id, producer=producer, owned=owned, script=script,
                                    join_polls=join_polls)
        super().__init__(settings, transport=transport, **kwargs)
        self.cluster = cluster
        self.producer = transport.the_producer
        self.reader = transport.the_reader
