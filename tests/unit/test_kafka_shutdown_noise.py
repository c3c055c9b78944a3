"""A clean shutdown prints no kafka-python traceback (consumer/kafka/quiet.py).

kafka-python 3.0.12 reads a socket on its IO thread while another thread may be closing the same transport;
the read then finds the socket gone and logs ``Error receiving network data closing socket`` at ERROR with an
``AttributeError`` traceback. `rnnwatch demo` showed it in 3 runs of 25 (its client-log silencing removed), and
`run` stops its clients the same way. These tests drive the library's own read on real transport objects in
both states: closed (the race; nothing to report) and open (a real error; still reported).
"""

from __future__ import annotations

import logging
import socket

import pytest
from kafka.net.transport import KafkaTCPTransport

import rnnwatch.consumer.kafka.python  # noqa: F401  (importing the default transport installs the filter)


class _Net:
    """The two calls a transport's close makes on its IO loop."""

    def unregister_event(self, sock: object, events: int) -> None:
        pass

    def cancel(self, task: object) -> None:
        pass


def _transport_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kafka.net.transport" and r.levelno >= logging.ERROR]


def test_a_read_on_a_transport_another_thread_closed_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    a, b = socket.socketpair()
    try:
        transport = KafkaTCPTransport(_Net(), a)
        transport.close()  # the closing thread: the socket is gone ...
        with caplog.at_level(logging.DEBUG, logger="kafka"):
            data, err = transport._sock_recv()  # ... when the IO thread's read, already woken, runs
        assert err is not None and data == b""  # the library still ends the read with an error
        assert _transport_errors(caplog) == []
        demoted = [r for r in caplog.records if r.name == "kafka.net.transport" and r.levelno == logging.DEBUG
                   and "Error receiving network data" in r.getMessage()]
        assert len(demoted) == 1  # still there for whoever logs kafka-python at DEBUG
    finally:
        a.close()
        b.close()


def test_a_read_error_on_an_open_transport_is_still_reported(caplog: pytest.LogCaptureFixture) -> None:
    a, b = socket.socketpair()
    transport = KafkaTCPTransport(_Net(), a)
    a.close()  # the socket fails under an open transport: a real error, not a shutdown
    b.close()
    with caplog.at_level(logging.DEBUG, logger="kafka"):
        _, err = transport._sock_recv()
    assert err is not None
    errors = _transport_errors(caplog)
    assert len(errors) == 1 and "Error receiving network data" in errors[0].getMessage()
