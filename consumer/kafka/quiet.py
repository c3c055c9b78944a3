"""kafka-python's errors about a transport that is already closed are shutdown noise: logged at DEBUG.

kafka-python 3 reads and writes its sockets on an IO thread while another thread may close the client. The
read woken just before the close then finds the socket gone (``_sock`` set to None: ``AttributeError``; or
closed under it: ``OSError``) and the library logs ``<KafkaTCPTransport [...] (closed)>: Error receiving
network data closing socket`` at ERROR with a traceback (3.0.12; ``tests/unit/test_kafka_shutdown_noise.py``
replays it). Nothing is lost (the transport was closed on purpose), but an operator reading ERROR and a
traceback after a clean stop of `run` would look for a fault that is not there. The filter demotes a
``kafka.net.transport`` record at ERROR or above to DEBUG *only* when the transport it names is closing; the same
error on an open transport (a broker that drops the connection) keeps its level. Demoted, not dropped: where
the ``kafka`` logger is enabled for DEBUG it is still printed, at DEBUG.
"""

from __future__ import annotations

import logging

__all__ = ["ClosedTransportNoise", "install"]

TRANSPORT_LOGGER = "kafka.net.transport"


class ClosedTransportNoise(logging.Filter):
    """Demote an error record whose first argument is a kafka-python transport that is closing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and _names_a_closed_transport(record):
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            # the logger's level was checked at ERROR; a demoted record passes only where DEBUG is enabled
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _names_a_closed_transport(record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    is_closing = getattr(args[0], "is_closing", None) if args else None
    return callable(is_closing) and is_closing() is True


def install() -> None:
    """Attach the filter to kafka-python's transport logger, once (idempotent)."""
    logger = logging.getLogger(TRANSPORT_LOGGER)
    if not any(isinstance(f, ClosedTransportNoise) for f in logger.filters):
        logger.addFilter(ClosedTransportNoise())
