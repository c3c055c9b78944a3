"""Every `rnnwatch` subcommand's argparse wiring, one module per command; the library modules hold no argparse.

* :mod:`~rnnwatch.consumer.cli.main` - the entry point: builds the parser, turns errors into exit codes, and hands
  ``train``/``export``/``adopt``/``evaluate`` to the training side's own parsers (``rnnwatch.export.cli``,
  ``rnnwatch.export.adopt.cli``, ``rnnwatch.evaluate.cli``), imported only when one of them runs, so the runtime
  never imports torch or onnx;
* :mod:`~rnnwatch.consumer.cli.run` - `run` (flags generated from the settings declaration), signals, status line;
* :mod:`~rnnwatch.consumer.cli.check`, :mod:`~rnnwatch.consumer.cli.score`, :mod:`~rnnwatch.consumer.cli.produce`,
  :mod:`~rnnwatch.consumer.cli.demo` - the other runtime commands.

``python -m rnnwatch.consumer.cli`` is the same as ``rnnwatch``.
"""

from __future__ import annotations

from rnnwatch.consumer.cli.main import build_parser, main, run_command

__all__ = ["build_parser", "main", "run_command"]
