"""``python -m rnnwatch.consumer.cli``: the `rnnwatch` entry point."""

from __future__ import annotations

import sys

from rnnwatch.consumer.cli.main import main

sys.exit(main())
