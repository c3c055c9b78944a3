"""The single `rnnwatch` entry point: one subcommand per job, each wired by its module in this package.

Subcommands that need the training side hand their arguments to it so the runtime never imports torch:
`train` and `export` to ``rnnwatch.export.cli`` (the ``[export]`` extra: torch, onnx), `evaluate` to
``rnnwatch.evaluate.cli`` (it trains too: the same extra), `adopt` to ``rnnwatch.export.adopt.cli``
(the ``[adopt]`` extra: onnx only).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import typing
from collections.abc import Callable, Sequence

from rnnwatch.consumer.errors import RnnwatchError
from rnnwatch.consumer.malloc import fix_mmap_threshold

__all__ = ["build_parser", "main", "run_command"]

# (subcommand, module of this package that wires it). Each exposes `register(subparsers) -> None` and sets
# `func=callable(args) -> int` on its parser via `set_defaults`.
_RUNTIME_COMMANDS: tuple[tuple[str, str], ...] = (
    ("run", "rnnwatch.consumer.cli.run"),
    ("demo", "rnnwatch.consumer.cli.demo"),
    ("check", "rnnwatch.consumer.cli.check"),
    ("score", "rnnwatch.consumer.cli.score"),
    ("produce", "rnnwatch.consumer.cli.produce"),
)
# (subcommand, help, module whose main() takes [subcommand, *args], the extra it needs)
_EXPORT_COMMANDS: tuple[tuple[str, str, str, str], ...] = (
    ("train", "Train a reference recurrent forecaster on a CSV and export it as a step model.",
     "rnnwatch.export.cli", "export"),
    ("export", "Export your own PyTorch step module to an ONNX step model.", "rnnwatch.export.cli", "export"),
    ("adopt", "Wrap an existing recurrent ONNX model as a step model (needs onnx, not torch).",
     "rnnwatch.export.adopt.cli", "adopt"),
    ("evaluate", "NAB scores of train + score on a labeled corpus in NAB's layout.", "rnnwatch.evaluate.cli",
     "export"),
)


class _Parser(argparse.ArgumentParser):
    """argparse, plus the nearest known flag when one is not recognised (``--grup-id``: did you mean ...)."""

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments:"):
            from rnnwatch.consumer.options import did_you_mean

            known = [flag for p in _all_parsers(self) for flag in p._option_string_actions]
            hints = [f"{arg}{did_you_mean(arg.partition('=')[0], known)}" for arg in message.split()[2:]
                     if arg.startswith("--") and did_you_mean(arg.partition("=")[0], known)]
            if hints:
                message = f"{message}; {'; '.join(hints)}"
        super().error(message)


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(p for a in subs for p in a.choices.values())]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnwatch",
        description="Novelty detection on live Kafka streams with recurrent step models (ONNX).",
    )
    parser.add_argument("--version", action="version", version=f"rnnwatch {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, module in _RUNTIME_COMMANDS:
        importlib.import_module(module).register(sub)
    for name, help_text, _module, _extra in _EXPORT_COMMANDS:
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate_to_export(name))
    return parser


def _delegate_to_export(name: str) -> Callable[[argparse.Namespace], int]:
    module, extra = next((m, e) for n, _, m, e in _EXPORT_COMMANDS if n == name)

    def run(args: argparse.Namespace) -> int:
        try:
            export_cli = importlib.import_module(module)
        except ImportError as exc:
            print(
                f"rnnwatch {name} needs the {'training' if extra == 'export' else extra} extra "
                f"({exc.name} is missing): pip install 'rnnwatch[{extra}]'",
                file=sys.stderr,
            )
            return 2
        result: int = export_cli.main([name, *args.rest])
        return result

    return run


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:  # the service tunes its allocator before any import starts threads that malloc
        fix_mmap_threshold()
    if argv and argv[0] in {name for name, *_ in _EXPORT_COMMANDS}:
        # argparse cannot hand "--flags" through to another parser; delegate before parsing.
        return _delegate_to_export(argv[0])(argparse.Namespace(rest=argv[1:]))
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; what reaches the user is one line on stderr, never a traceback.

    The one place errors are turned into exit codes, for both halves (the training side's errors derive from
    the same :class:`RnnwatchError`): 2 for an RnnwatchError (bad flags, input, model, unreachable broker),
    1 for an operating-system error nobody anticipated (disk full ...), 141 (128 + SIGPIPE, silently) when
    the reader of stdout went away (``rnnwatch score ... | head``), 130 on Ctrl-C.
    """
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except RnnwatchError as exc:
        print(f"rnnwatch {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _detach_stdout()
        return 141
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"rnnwatch {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    return code


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def _detach_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rnnwatch")
    except PackageNotFoundError:
        return "unknown"
