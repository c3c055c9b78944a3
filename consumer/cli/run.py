"""`rnnwatch run`: parse settings, install signal handlers, run the service, print the summary."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType

from rnnwatch.consumer import gctune
from rnnwatch.consumer.cli.status_line import StatusPrinter
from rnnwatch.consumer.logs import configure_logging
from rnnwatch.consumer.service import Service
from rnnwatch.consumer.settings import add_arguments, load_settings, unknown_env_names

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run", help="Run the detector against a Kafka topic (the service).",
        description="Consume ticks, step the model per key, publish anomaly events and serve metrics. "
                    "Settings come from flags, RNNWATCH_* environment variables, or --config TOML, in that order.",
    )
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    for warning in unknown_env_names(os.environ):
        log.warning(warning)
    service = Service(settings)
    gctune.settle(settings.max_poll_records)  # built: what exists now lives as long as the process
    _install_signal_handlers(service, settings.shutdown_grace_ms / 1000)
    service.start()
    status = StatusPrinter(service.registry).start() if sys.stderr.isatty() else None
    try:
        summary = service.run()
    finally:
        if status is not None:
            status.stop()
    if settings.until_caught_up:
        print(json.dumps(summary.as_dict()), flush=True)
    return 0


def _install_signal_handlers(service: Service, grace_s: float) -> None:
    """SIGTERM/SIGINT: finish the batch, checkpoint, leave; past the grace period, exit hard."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch, checkpointing, leaving the group (grace %.0fs)",
                 signal.Signals(signum).name, grace_s)
        service.request_stop()
        threading.Thread(target=_deadline, args=(grace_s,), daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _deadline(grace_s: float) -> None:
    time.sleep(grace_s)
    log.error("shutdown did not finish within the %gs grace period; exiting without a final checkpoint", grace_s)
    sys.stderr.flush()
    os._exit(1)
