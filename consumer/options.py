"""Declaring a setting once: one dataclass field whose type and metadata give its flag, env var and TOML key.

A settings class declares each option as a field with :func:`setting`; :func:`options_of` reads the class
(resolved type hints + field metadata) into :class:`Option` objects, from which come the argparse flags
(help shows ``[env: RNNWATCH_…]``), the ``RNNWATCH_*`` names, the accepted TOML keys, the conversion of text
to the field's type (``Literal`` → choices, ``int | None`` → the words ``model``/``none`` mean unset) and the
range checks (``gt``/``ge``/``le``). Nothing else lists the options, so adding one is adding one field.

Why no library (pydantic-settings): it would bring pydantic, pydantic-core (a compiled wheel of several MB),
annotated-types, typing-extensions and python-dotenv into a runtime image whose only other dependencies are
numpy, onnxruntime, kafka-python and prometheus-client, for what is ~250 lines here; and its error messages
and flag generation would still need wrapping to say ``flag --x`` / ``environment variable RNNWATCH_X`` /
``TOML key 'x'`` and to refuse secrets on the command line.
"""

from __future__ import annotations

import argparse
import difflib
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Union

from rnnwatch.consumer.errors import ConfigError

__all__ = ["ENV_PREFIX", "Option", "Secret", "add_arguments", "convert", "did_you_mean", "options_of", "setting"]

ENV_PREFIX = "RNNWATCH_"
_META = "rnnwatch.option"
_UNSET_WORDS = {"", "none", "model"}  # for `int | None` / `float | None`: unset = the model's own value


class Secret:
    """A value that does not show itself: repr and str are masked, so settings, logs and errors cannot leak it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class _Spec:
    help: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    flag_only: bool = False  # no env var, no TOML key (a per-invocation switch)
    repeatable: bool = False  # the flag may be given several times; the values are joined with ","
    parse: Callable[[str], Any] | None = None  # text -> the field's (structured) type


def setting(default: Any, help: str, *, gt: float | None = None, ge: float | None = None,
            le: float | None = None, flag_only: bool = False, repeatable: bool = False,
            parse: Callable[[str], Any] | None = None) -> Any:
    """Declare a settings field: its default, its help text, its range and, for structured values, its parser.

    A field typed :class:`Secret` has no flag (``ps`` would show it): it comes from ``RNNWATCH_<NAME>``, a
    TOML key, or a file named by the generated option ``<name>_file`` (a mounted secret).
    """
    spec = _Spec(help, gt, ge, le, flag_only, repeatable, parse)
    return field(default=default, metadata={_META: spec})


@dataclass(frozen=True)
class Option:
    """One option as users see it, derived from a settings field (``file_of`` set: the generated ``_file``)."""

    name: str
    type: Any
    default: Any
    spec: _Spec
    file_of: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def secret(self) -> bool:
        return self.type is Secret

    @property
    def choices(self) -> tuple[str, ...] | None:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else None

    @property
    def help(self) -> str:
        return self.spec.help


def options_of(cls: type) -> tuple[Option, ...]:
    """The options of a settings dataclass, in field order; a ``<name>_file`` option follows each secret."""
    hints = typing.get_type_hints(cls)
    out: list[Option] = []
    for f in fields(cls):
        spec = f.metadata.get(_META)
        if spec is None:
            continue
        if spec.repeatable and spec.parse is None:  # the repeated values are joined with "," and parsed
            msg = f"{cls.__name__}.{f.name}: a repeatable option needs a parser"
            raise TypeError(msg)
        default = f.default if f.default is not MISSING else None
        out.append(Option(f.name, hints[f.name], default, spec))
        if hints[f.name] is Secret:
            out.append(Option(f"{f.name}_file", str, "", _Spec(f"File holding {f.name} (a mounted secret; one "
                                                               "trailing newline is ignored)."), file_of=f.name))
    return tuple(out)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- conversion -------------------------------------------------------------------------------------------
def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    msg = f"expected a boolean (true/false), got {text!r}"
    raise ValueError(msg)


def _optional(tp: Any) -> Any:
    """``X`` for ``X | None``, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _type_name(tp: Any) -> str:
    inner = _optional(tp)
    if inner is not None:
        return f"{_type_name(inner)} or 'model'"
    return {bool: "a boolean", int: "an integer", float: "a number"}.get(tp, "a string")


def _from_text(opt: Option, text: str) -> Any:
    if opt.spec.parse is not None:
        return opt.spec.parse(text)
    tp = opt.type
    inner = _optional(tp)
    if inner is not None:
        return None if text.strip().lower() in _UNSET_WORDS else inner(text)
    if tp is bool:
        return _bool(text)
    if tp in (int, float):
        return tp(text)
    return text  # str, Secret (wrapped after the <name>_file lookup), Literal (checked below)


def _already_typed(opt: Option, raw: Any) -> bool:
    """A value passed from Python (TOML, the API) that already has the field's type."""
    tp = _optional(opt.type) or opt.type
    if isinstance(raw, bool):
        return tp is bool
    if isinstance(raw, int):
        return tp in (int, float)
    return isinstance(raw, float) and tp is float


def convert(opt: Option, raw: Any, source: str) -> Any:
    """``raw`` (text from a flag or env var, or a TOML/Python value) as the option's type, range-checked.

    The ConfigError names ``source`` (``flag --x``, ``environment variable RNNWATCH_X``, ``TOML key 'x'``) and
    never quotes a secret's value.
    """
    if opt.spec.parse is not None and isinstance(raw, dict | list | tuple | int | float) and not isinstance(raw, bool):
        # structured input and numbers (TOML, Python) go through the same parser and checks as text:
        # min_event_time = 1600000000 means what "1600000000" means (an epoch in auto-detected units)
        raw = str(raw) if isinstance(raw, int | float) else _as_text(raw)
    if _already_typed(opt, raw):
        value = float(raw) if (_optional(opt.type) or opt.type) is float else raw
    elif isinstance(raw, str):
        try:
            value = _from_text(opt, raw)
        except ConfigError as exc:
            msg = f"{source}: {exc}"
            raise ConfigError(msg) from None
        except ValueError as exc:
            if opt.spec.parse:
                msg = f"{source}: {exc}"
            else:  # int('lots') says "invalid literal for int() with base 10": say it in the user's terms
                got = "another value" if opt.secret else repr(raw)
                msg = f"{source}: expected {_type_name(opt.type)}, got {got}"
            raise ConfigError(msg) from None
    else:
        got = "another type" if opt.secret else repr(raw)
        msg = f"{source}: expected {_type_name(opt.type)}, got {got}"
        raise ConfigError(msg)
    if opt.choices and value not in opt.choices:
        shown = ", ".join(c or "''" for c in opt.choices)
        msg = f"{source}: {value!r} is not one of {shown}{did_you_mean(str(value), opt.choices)}"
        raise ConfigError(msg)
    _check_range(opt, value, source)
    return value


def _as_text(raw: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> Any:
    """``{"a": 1}`` / ``[("a", 1)]`` / ``["a=1"]`` as ``"a=1"`` (anything else is returned for the type error)."""
    items = raw.items() if isinstance(raw, dict) else raw
    parts: list[str] = []
    for item in items:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, tuple | list) and len(item) == 2:
            parts.append(f"{item[0]}={item[1]}")
        else:
            return raw
    return ",".join(parts)


def _check_range(opt: Option, value: Any, source: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    s = opt.spec
    failed = ((s.gt is not None and not value > s.gt and (">", s.gt))
              or (s.ge is not None and not value >= s.ge and (">=", s.ge))
              or (s.le is not None and not value <= s.le and ("<=", s.le)))
    if failed:
        word, bound = failed
        msg = f"{source}: {opt.name} must be {word} {bound:g}, got {value:g}"
        raise ConfigError(msg)


# -- argparse ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, options: Iterable[Option]) -> None:
    """One flag per option; defaults stay unset (None) so precedence can see what the user passed."""
    parser.add_argument("--config", metavar="TOML", help=f"TOML settings file [env: {ENV_PREFIX}CONFIG]")
    for opt in options:
        if opt.secret:
            parser.add_argument(opt.flag, dest=f"_refused_{opt.name}", nargs="?", action=_RefuseSecretFlag,
                                help=argparse.SUPPRESS)
            continue
        env = "" if opt.spec.flag_only else f" [env: {opt.env}]"
        if opt.type is bool and opt.spec.flag_only:
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", default=None, help=opt.help)
            continue
        if opt.spec.repeatable:
            parser.add_argument(opt.flag, dest=opt.name, default=None, action="append", metavar="KEY=VALUE",
                                help=f"{opt.help}{env}")
            continue
        shown = _shown_default(opt.default)
        default = f" (default: {shown})" if shown else ""
        metavar = None if opt.choices else "BOOL" if opt.type is bool else opt.name.split("_")[-1].upper()
        parser.add_argument(opt.flag, dest=opt.name, default=None, choices=opt.choices, metavar=metavar,
                            help=f"{opt.help}{default}{env}")


def _shown_default(default: Any) -> str:
    if default in ("", None, ()):
        return ""
    return str(default).lower() if isinstance(default, bool) else str(default)


class _RefuseSecretFlag(argparse.Action):
    """A secret on the command line is readable by every local user (ps, /proc/<pid>/cmdline): refuse it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        name = self.dest.removeprefix("_refused_")
        env = ENV_PREFIX + name.upper()
        parser.error(f"{option_string} is not accepted: `ps` would show the secret to every user of this host; "
                     f"set {env}_FILE (or --{name.replace('_', '-')}-file) to a file holding it, or {env}")
