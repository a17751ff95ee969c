# -*- test-case-name: txstore.test.unit.test_config -*-
"""
INI configuration with a schema: every option is declared, parsed and checked at start.

An operator's typo must stop the process with a message that names the file, the section and
the option, not a traceback and not a silently ignored setting. So each config file has a
`Schema` of `Section`s; each section declares its `Option`s (a parser, a default, a one-line
doc) and, where names are open-ended (``user_<account>_<user>``), `Pattern`s. Anything
undeclared is an error.
"""

from __future__ import annotations

import configparser
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

_MISSING = object()


class ConfigError(Exception):
    """A configuration that cannot be used; `str()` is the message for the operator."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        section: str | None = None,
        option: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.section = section
        self.option = option

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(self.path)
        if self.section:
            where.append(f"[{self.section}]")
        if self.option:
            where.append(self.option)
        return f"{': '.join(where)}: {self.message}" if where else self.message


class BadValue(ValueError):
    """Raised by option parsers; the loader adds where the value came from."""


# --- parsers: each takes the raw string (and the config file's directory) ------------------

Parser = Callable[[str, Path], Any]


def string(raw: str, _base: Path) -> str:
    return raw


def nonempty_string(raw: str, _base: Path) -> str:
    if not raw:
        raise BadValue("must not be empty")
    return raw


def _within(value: Any, minimum: Any, maximum: Any, spec: str = "") -> Any:
    """``value`` if it lies within the bounds (None: none), each shown with the format ``spec``."""
    if minimum is not None and value < minimum:
        raise BadValue(f"{value:{spec}} is below the minimum {minimum:{spec}}")
    if maximum is not None and value > maximum:
        raise BadValue(f"{value:{spec}} is above the maximum {maximum:{spec}}")
    return value


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    def parse(raw: str, _base: Path) -> int:
        try:
            value = int(raw, 10)
        except ValueError:
            raise BadValue(f"{raw!r} is not a whole number") from None
        return _within(value, minimum, maximum)

    return parse


def number(minimum: float | None = None, maximum: float | None = None) -> Parser:
    def parse(raw: str, _base: Path) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise BadValue(f"{raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise BadValue(f"{raw!r} is not a finite number")
        return _within(value, minimum, maximum, "g")

    return parse


port = integer(0, 65535)
timeout = number(0.001)  # seconds to wait for something; zero would not wait at all

_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n"}


def boolean(raw: str, _base: Path) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise BadValue(f"{raw!r} is not a boolean (use true or false)")


def ip_address(raw: str, _base: Path) -> str:
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise BadValue(f"{raw!r} is not an IP address") from None


def path(raw: str, base: Path) -> Path:
    """A filesystem path; a relative one is taken from the config file's own directory."""
    if not raw:
        raise BadValue("must not be empty")
    candidate = Path(raw).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def choice(*allowed: str) -> Parser:
    def parse(raw: str, _base: Path) -> str:
        if raw not in allowed:
            raise BadValue(f"{raw!r} is not one of {', '.join(allowed)}")
        return raw

    return parse


_SIZE = re.compile(r"^(\d+)\s*([kmgt]i?b?)?$", re.IGNORECASE)
_SIZE_FACTORS = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def size(raw: str, _base: Path) -> int:
    """A byte count: ``5368709122``, ``64KiB``, ``5GiB`` (binary) or ``5GB`` (decimal)."""
    match = _SIZE.match(raw.strip())
    if not match:
        raise BadValue(f"{raw!r} is not a size (like 65536, 64KiB or 5GiB)")
    value, unit = int(match[1]), (match[2] or "").lower()
    if unit:
        power = "kmgt".index(unit[0]) + 1
        value *= 1024**power if "i" in unit else _SIZE_FACTORS[unit[0]]
    return value


# --- schema ----------------------------------------------------------------------------------


@frozen
class Option:
    name: str
    parse: Parser
    default: Any = _MISSING
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@frozen
class Pattern:
    """Options whose names match a regular expression, such as ``user_<account>_<user>``."""

    regex: str
    parse: Parser
    doc: str = ""

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.regex, name) is not None


@frozen
class Section:
    name: str
    options: tuple[Option, ...] = ()
    patterns: tuple[Pattern, ...] = ()
    required: bool = False
    doc: str = ""

    def option(self, name: str) -> Option | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None


@frozen
class Schema:
    """The sections a file may have; `dynamic` sections are matched by a name regex."""

    sections: tuple[Section, ...] = ()
    dynamic: tuple[tuple[str, Section], ...] = ()

    def section_for(self, name: str) -> Section | None:
        for section in self.sections:
            if section.name == name:
                return section
        for regex, section in self.dynamic:
            if re.fullmatch(regex, name):
                return section
        return None


@frozen
class LoadedConfig:
    """Parsed values per section (defaults filled in), and where they came from."""

    path: Path
    values: Mapping[str, Mapping[str, Any]] = field(factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        return self.values.get(name, {})

    def error(self, message: str, section: str | None = None, option: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, section=section, option=option)


def _read(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None, default_section="\0no default section", strict=True
    )
    parser.optionxform = str  # option names are case sensitive, as written
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle, source=str(path))
    except FileNotFoundError:
        raise ConfigError("no such file", path=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", path=path) from None
    except PermissionError:
        raise ConfigError("permission denied", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text", path=path) from None
    except configparser.DuplicateSectionError as err:
        raise ConfigError(f"section appears twice (line {err.lineno})", path=path, section=err.section) from None
    except configparser.DuplicateOptionError as err:
        raise ConfigError(
            f"option appears twice (line {err.lineno})", path=path, section=err.section, option=err.option
        ) from None
    except configparser.MissingSectionHeaderError as err:
        raise ConfigError(_before_any_section(err.lineno, err.line), path=path) from None
    except configparser.ParsingError as err:
        headers = [lineno for lineno, line in err.errors if line.strip("'\"").lstrip().startswith("[")]
        if headers:
            raise ConfigError(
                f"line {headers[0]} is not a [section] header: the closing ] is missing", path=path
            ) from None
        lines = ", ".join(str(lineno) for lineno, _ in err.errors)
        raise ConfigError(f"cannot parse line {lines} (neither a [section] nor name = value)", path=path) from None
    return parser


def _before_any_section(lineno: int, line: str) -> str:
    """What to say about a line before the first section: often a header missing its ``]``."""
    text = line.strip()
    if text.startswith("[") and not text.endswith("]"):
        return f"line {lineno}: {text!r} is not a [section] header: the closing ] is missing"
    return f"line {lineno} comes before any [section]: {text!r}"


def _default(option: Option, base: Path) -> Any:
    """Defaults written as strings go through the parser, so relative paths resolve alike."""
    if isinstance(option.default, str):
        return option.parse(option.default, base)
    return option.default


def parse_section(
    path: Path, name: str, section: Section, items: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """
    Parse one section's raw ``items`` against its declaration (defaults filled in); raise
    `ConfigError` naming the file, the section and the option on any problem.
    """
    base = path.parent
    parsed: dict[str, Any] = {}
    for option_name, raw in items:
        declared = section.option(option_name)
        parse = declared.parse if declared else None
        if parse is None:
            for pattern in section.patterns:
                if pattern.matches(option_name):
                    parse = pattern.parse
                    break
        if parse is None:
            raise ConfigError("unknown option", path=path, section=name, option=option_name)
        try:
            parsed[option_name] = parse(raw.strip(), base)
        except BadValue as err:
            raise ConfigError(str(err), path=path, section=name, option=option_name) from None
    for declared in section.options:
        if declared.name not in parsed:
            if declared.required:
                raise ConfigError("required option is missing", path=path, section=name, option=declared.name)
            parsed[declared.name] = _default(declared, base)
    return parsed


def load_config(path: str | Path, schema: Schema) -> LoadedConfig:
    """Read and check one INI file against `schema`; raise `ConfigError` on any problem."""
    path = Path(path).expanduser().absolute()
    parser = _read(path)
    base = path.parent
    values: dict[str, dict[str, Any]] = {}
    for name in parser.sections():
        section = schema.section_for(name)
        if section is None:
            known = ", ".join(f"[{s.name}]" for s in schema.sections)
            raise ConfigError(f"unknown section (known: {known})", path=path, section=name)
        values[name] = parse_section(path, name, section, parser.items(name))
    for section in schema.sections:
        if section.name not in values:
            if section.required:
                raise ConfigError("required section is missing", path=path, section=section.name)
            defaults = {o.name: _default(o, base) for o in section.options if not o.required}
            if len(defaults) == len(section.options):
                values[section.name] = defaults
    return LoadedConfig(path=path, values=values)
