# -*- test-case-name: txstore.test.unit.test_qos_classes -*-
"""
IO classes: how the disks of the cluster are shared between tenants, from ``txstore.conf``.

Each ``[io-class:<name>]`` section names a class with a weight (its share of a busy device
against the other classes' weights) and optional caps, in bytes per second, for one stream and
for one tenant across the cluster. One class is the default (the class of accounts that were
given none); the class named ``background`` is the consistency daemons' (replication, auditor,
reconstructor). With no section at all, there is one class, ``standard``, and ``background``,
both of weight 1: the devices are still shared fairly between tenants, only not unequally.

The rules on who chooses (a reseller admin sets an account's class; a request may only go
down from it) are the proxy's `txstore.middleware.qos`; sharing a device is the node's
`txstore.qos.scheduler`. What travels between them is an `IOSpec`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from attrs import field, frozen

from txstore.common import config as c

DEFAULT_NAME = "standard"
BACKGROUND = "background"
SECTION_REGEX = r"io-class:([A-Za-z0-9][A-Za-z0-9_-]{0,31})"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")

SECTION = c.Section(
    "io-class:<name>",
    doc="One IO class: its share of a busy device, and its caps.",
    options=(
        c.Option("weight", c.number(0.01, 1000.0), 1.0, doc="Share of a busy device against other classes' weights."),
        c.Option("stream_rate", c.size, 0, doc="Bytes per second one stream may move (0: no cap)."),
        c.Option("tenant_rate", c.size, 0, doc="Bytes per second one tenant may move, cluster-wide (0: no cap)."),
        c.Option("default", c.boolean, False, doc="The class of accounts given none."),
    ),
)


@frozen
class IOClass:
    name: str
    weight: float = 1.0
    stream_rate: int = 0  # bytes per second; 0: no cap
    tenant_rate: int = 0


@frozen
class IOSpec:
    """What one request's disk work is: its class, whose it is, and its own cap (bytes/s, 0: none)."""

    io_class: str
    tenant: str = ""
    rate: int = 0


@frozen
class IOClasses:
    classes: Mapping[str, IOClass] = field(converter=dict)
    default_name: str = DEFAULT_NAME

    def __attrs_post_init__(self) -> None:
        if self.default_name not in self.classes:
            raise ValueError(f"the default IO class {self.default_name!r} is not defined")
        if BACKGROUND not in self.classes:
            raise ValueError(f"the {BACKGROUND!r} IO class is not defined")

    def __iter__(self) -> Iterator[IOClass]:
        return iter(self.classes.values())

    def get(self, name: str) -> IOClass | None:
        return self.classes.get(name)

    @property
    def default(self) -> IOClass:
        return self.classes[self.default_name]

    def resolve(self, name: str | None) -> IOClass:
        """The class of that name; the default for none or an unknown one (a node's view)."""
        return self.classes.get(name or "", self.default)

    @staticmethod
    def within(wanted: IOClass, allowed: IOClass) -> bool:
        """
        Whether ``wanted`` asks for no more than ``allowed``: no more weight, and each cap that
        ``allowed`` has at least as tight (a lighter class without caps is no way out of them).
        """
        if wanted.weight > allowed.weight:
            return False
        for cap in ("stream_rate", "tenant_rate"):
            limit = getattr(allowed, cap)
            if limit and not 0 < getattr(wanted, cap) <= limit:
                return False
        return True

    def stream_cap(self, spec: IOSpec) -> int:
        """The tighter of the class's stream cap and the request's own (bytes/s, 0: none)."""
        caps = [cap for cap in (self.resolve(spec.io_class).stream_rate, spec.rate) if cap > 0]
        return min(caps) if caps else 0

    def info(self) -> dict:
        """What ``/info`` shows."""
        return {
            "default": self.default_name,
            "classes": {
                cls.name: {"weight": cls.weight, "stream_rate": cls.stream_rate, "tenant_rate": cls.tenant_rate}
                for cls in self
            },
        }


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


DEFAULT_CLASSES = IOClasses({DEFAULT_NAME: IOClass(DEFAULT_NAME), BACKGROUND: IOClass(BACKGROUND)})


def load_io_classes(loaded: c.LoadedConfig) -> IOClasses:
    """The classes of a loaded ``txstore.conf``; `ConfigError` naming what is wrong."""
    classes: dict[str, IOClass] = {}
    defaults = []
    for section, values in loaded.values.items():
        match = re.fullmatch(SECTION_REGEX, section)
        if match is None:
            continue
        name = match[1]
        classes[name] = IOClass(name, float(values["weight"]), values["stream_rate"], values["tenant_rate"])
        if values["default"]:
            defaults.append(name)
    if not classes:
        return DEFAULT_CLASSES
    if len(defaults) > 1:
        raise loaded.error(f"only one IO class may be the default, not {', '.join(sorted(defaults))}", "io-class")
    if not defaults:
        if len(classes) - (BACKGROUND in classes) != 1:
            raise loaded.error("set default = yes on the IO class of accounts given none", "io-class")
        defaults = [name for name in classes if name != BACKGROUND]
    classes.setdefault(BACKGROUND, IOClass(BACKGROUND))
    return IOClasses(classes, defaults[0])
