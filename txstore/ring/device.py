# -*- test-case-name: txstore.test.unit.test_ring -*-
"""
Devices: the disks a ring places partitions on, and their textual forms.

A device is a value: changing its weight makes a new ``Device``. The textual forms are the
ones operators already know from ``swift-ring-builder``:

- the *add* form ``r1z2-10.0.0.1:6200R10.0.1.1:6300/sdb1_meta`` names every field of a new
  device (the ``R<ip>:<port>`` replication address and the ``_meta`` suffix are optional, and
  so is the ``r1`` region, which then defaults to 1);
- the *search* form ``d3r1z2-10.0.0.1:6200R10.0.1.1:6300/sdb1_meta`` in which every part is
  optional, so ``d3``, ``r1z2``, ``10.0.0.1``, ``:6200`` or ``/sdb1`` each select devices.

IPv6 addresses are written in brackets (``[::1]:6200``) and stored without them.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Any

from attrs import Factory, asdict, field, fields, frozen

#: The fields of a device, in the order they are shown.
DEVICE_FIELDS = (
    "id",
    "region",
    "zone",
    "ip",
    "port",
    "replication_ip",
    "replication_port",
    "device",
    "weight",
    "meta",
)


def normalize_ip(value: str) -> str:
    """
    An address as stored: IPv6 without brackets and in its compressed form, IPv4 as given,
    a host name lowercased (DNS ignores case, and ``R`` is a separator in device strings).
    """
    if not isinstance(value, str):
        raise ValueError(f"an ip must be a string, not {value!r}")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise ValueError("an ip must not be empty")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", text):
        raise ValueError(f"invalid ip or host name: {value!r}")
    return text.lower()


def format_ip(ip: str) -> str:
    """The address as written in device strings: IPv6 in brackets."""
    return f"[{ip}]" if ":" in ip else ip


def _whole_number(minimum: int, maximum: int | None = None):
    def check(instance: object, attribute: Any, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"device {attribute.name} must be an integer, not {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = "" if maximum is None else f" and at most {maximum}"
            raise ValueError(
                f"device {attribute.name} must be at least {minimum}{upper}, not {value}"
            )

    return check


def _check_weight(instance: object, attribute: Any, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"device weight must be a finite number >= 0, not {value!r}")


def _to_weight(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"device weight must be a number, not {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"device weight must be a number, not {value!r}") from None


def _check_name(instance: object, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value or re.search(r"[\s/]", value):
        raise ValueError(f"device name must be a non-empty string without '/' or spaces: {value!r}")


def _check_meta(instance: object, attribute: Any, value: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"device meta must be a string, not {value!r}")


_PORT = _whole_number(1, 65535)


@frozen(kw_only=True)
class Device:
    """
    One disk of the cluster. ``weight`` is relative: a device of weight 200 gets twice the
    partitions of one of weight 100. The replication address defaults to the main one.
    """

    id: int = field(validator=_whole_number(0, 2**32 - 2))
    region: int = field(validator=_whole_number(0))
    zone: int = field(validator=_whole_number(0))
    ip: str = field(converter=normalize_ip)
    port: int = field(validator=_PORT)
    replication_ip: str = field(
        converter=normalize_ip, default=Factory(lambda self: self.ip, takes_self=True)
    )
    replication_port: int = field(
        validator=_PORT, default=Factory(lambda self: self.port, takes_self=True)
    )
    device: str = field(validator=_check_name)
    weight: float = field(converter=_to_weight, validator=_check_weight)
    meta: str = field(default="", validator=_check_meta)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Device:
        """A device from a mapping of its fields; unknown keys are an error, not ignored."""
        unknown = set(values) - set(DEVICE_FIELDS)
        if unknown:
            raise ValueError(f"unknown device field(s): {', '.join(sorted(unknown))}")
        missing = {"id", "region", "zone", "ip", "port", "device", "weight"} - set(values)
        if missing:
            raise ValueError(f"missing device field(s): {', '.join(sorted(missing))}")
        optional = {"replication_ip", "replication_port", "meta"}
        return cls(**{k: v for k, v in values.items() if v is not None or k not in optional})

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-able values (what ring and builder files store)."""
        return asdict(self)

    def describe(self) -> str:
        """The *add* form of this device, e.g. ``r1z2-10.0.0.1:6200/sdb1``."""
        text = f"r{self.region}z{self.zone}-{format_ip(self.ip)}:{self.port}"
        if (self.replication_ip, self.replication_port) != (self.ip, self.port):
            text += f"R{format_ip(self.replication_ip)}:{self.replication_port}"
        text += f"/{self.device}"
        if self.meta:
            text += f"_{self.meta}"
        return text


assert tuple(f.name for f in fields(Device)) == DEVICE_FIELDS

_IP = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+?"
_ADD_FORM = re.compile(
    rf"""
    (?:r(?P<region>\d+))? z(?P<zone>\d+) -
    (?P<ip>{_IP}) : (?P<port>\d+)
    (?:R (?P<replication_ip>{_IP}) : (?P<replication_port>\d+))?
    / (?P<device>[^/_\s]+)
    (?:_(?P<meta>.*))?
    """,
    re.VERBOSE | re.DOTALL,
)


def parse_device_spec(text: str) -> dict[str, Any]:
    """
    The fields named by an *add* form such as ``r1z1-127.0.0.1:6200R127.0.0.1:6201/d1_meta``
    (everything but id and weight); a ``ValueError`` explains what is wrong.
    """
    match = _ADD_FORM.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid device {text!r}: expected r<region>z<zone>-<ip>:<port>"
            "[R<replication ip>:<port>]/<device>[_<meta>]"
        )
    values: dict[str, Any] = {
        "region": int(match["region"]) if match["region"] is not None else 1,
        "zone": int(match["zone"]),
        "ip": normalize_ip(match["ip"]),
        "port": int(match["port"]),
        "device": match["device"],
        "meta": match["meta"] or "",
    }
    if match["replication_ip"] is not None:
        values["replication_ip"] = normalize_ip(match["replication_ip"])
        values["replication_port"] = int(match["replication_port"])
    for key in ("port", "replication_port"):
        if key in values and not 1 <= values[key] <= 65535:
            raise ValueError(f"invalid device {text!r}: {key} {values[key]} is out of range")
    return values


_SEARCH_FORM = re.compile(
    rf"""
    (?:d(?P<id>\d+))? (?:r(?P<region>\d+))? (?:z(?P<zone>\d+))?
    (?P<dash>-)?
    (?P<ip>\[[0-9A-Fa-f:.]+\]|\d+\.\d+\.\d+\.\d+|(?(dash)[a-z0-9][a-z0-9.-]*?|(?!)))?
    (?::(?P<port>\d+))?
    (?:R(?P<replication_ip>{_IP})?(?::(?P<replication_port>\d+))?)?
    (?:/(?P<device>[^/_\s]+))?
    (?:_(?P<meta>.*))?
    """,
    re.VERBOSE | re.DOTALL,
)


@frozen
class DeviceSearch:
    """
    A parsed *search* form: each field that is not ``None`` must equal the device's.
    Build one with ``DeviceSearch.parse("r1z2-10.0.0.1:6200/sdb1")``.
    """

    id: int | None = None
    region: int | None = None
    zone: int | None = None
    ip: str | None = None
    port: int | None = None
    replication_ip: str | None = None
    replication_port: int | None = None
    device: str | None = None
    meta: str | None = None

    @classmethod
    def parse(cls, text: str) -> DeviceSearch:
        text = text.strip()
        match = _SEARCH_FORM.fullmatch(text) if text else None
        if (
            match is None
            or (match["dash"] and match["ip"] is None)
            or not any(match[name] is not None for name in DEVICE_FIELDS if name != "weight")
        ):
            raise ValueError(
                f"invalid search value {text!r}: expected d<id>r<region>z<zone>-<ip>:<port>"
                "R<replication ip>:<port>/<device>_<meta>, any part optional"
            )
        values: dict[str, Any] = {}
        for name in ("id", "region", "zone", "port", "replication_port"):
            if match[name] is not None:
                values[name] = int(match[name])
        for name in ("ip", "replication_ip"):
            if match[name] is not None:
                values[name] = normalize_ip(match[name])
        for name in ("device", "meta"):
            if match[name] is not None:
                values[name] = match[name]
        return cls(**values)

    def matches(self, device: Device) -> bool:
        return all(
            wanted is None or wanted == getattr(device, name)
            for name, wanted in asdict(self).items()
        )
