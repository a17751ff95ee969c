# -*- test-case-name: txstore.test.unit.test_object_server,txstore.test.unit.test_container_server,txstore.test.unit.test_node_routing -*-
"""
What the object, container and account servers of a node share: the context they run in,
the small request helpers that turn bad input into a clear 4xx, and what a handler answers
(`NodeResponse`, which the node's edge, ``txstore.storage.edge``, writes to the client).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen
from twisted.web.http import Request

from txstore.common.backend_client import BackendClient
from txstore.common.constraints import DEFAULT_CONSTRAINTS, Constraints
from txstore.common.hashing import PathHasher
from txstore.common.policies import PolicyCollection, StoragePolicy
from txstore.common.timestamps import Timestamp
from txstore.common.web import HTTPError  # noqa: F401  (re-exported for the servers)
from txstore.interfaces import IBlockingRunner, IResponseBody
from txstore.storage.diskfile import DiskFileManager

ResponseHeaders = Mapping[str | bytes, str | bytes]
TEXT_PLAIN = b"text/plain; charset=utf-8"


@frozen
class NodeResponse:
    """
    A node handler's answer. ``headers`` go out as given, in their order (a name set twice,
    in any case, keeps its first place and its last value, as twisted's headers do), with
    ``Content-Length`` among them: the edge adds none, so a HEAD's is the GET's and a 204 may
    have none. ``body`` is bytes, or an `IResponseBody` the edge streams; a HEAD's body is
    never written.
    """

    status: int
    headers: ResponseHeaders = field(factory=dict)
    body: bytes | IResponseBody = b""


def plain_text(status: int, text: str | bytes, headers: ResponseHeaders | None = None) -> NodeResponse:
    """A short plain-text answer (one line, newline-terminated) after ``headers``, if any."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if data and not data.endswith(b"\n"):
        data += b"\n"
    first = headers if headers is not None else {}
    return NodeResponse(status, {**first, b"Content-Type": TEXT_PLAIN, b"Content-Length": b"%d" % len(data)}, data)


@frozen
class StorageContext:
    """Everything a node's servers need, injected (tests pass a synchronous runner and a Clock)."""

    devices: Path
    mount_check: bool
    hasher: PathHasher
    policies: PolicyCollection
    runner: IBlockingRunner
    client: BackendClient
    clock: Callable[[], float]
    diskfiles: DiskFileManager
    constraints: Constraints = DEFAULT_CONSTRAINTS
    node_timeout: float = 3.0
    container_update_timeout: float = 1.0  # an object write's wait for its container row
    # txstore.qos.scheduler.IOScheduler: object bodies' disk work, shared by IO class (None:
    # straight to the runner, as unit tests of other parts have it)
    scheduler: Any = None
    keep_cache_size: int = 5 * 1024 * 1024  # larger objects' reads leave the page cache as it was

    async def checked_device(self, device: str) -> Path:
        """
        `device_path` in the device's own pool: a mount check is a stat, and a dying disk can
        hang a stat, so it must not run on the reactor thread.
        """
        return await self.runner.run(device, self.device_path, device)

    def device_path(self, device: str) -> Path:
        """The device's directory, or HTTPError 507 when it is missing or not mounted (blocks)."""
        try:
            path = self.diskfiles.device_path(device)
        except ValueError:
            raise HTTPError(400, "Invalid device") from None
        if path is None:
            raise HTTPError(507, f"Insufficient Storage: device {device} is not available")
        return path


    def mounted_devices(self) -> list[tuple[str, Path]]:
        """The devices this node serves now, with their paths (blocking: list and stat)."""
        if not self.devices.is_dir():
            return []
        found = []
        for entry in sorted(self.devices.iterdir()):
            try:
                path = self.diskfiles.device_path(entry.name)
            except ValueError:
                continue
            if path is not None:
                found.append((entry.name, path))
        return found


def header(request: Request, name: str) -> str | None:
    """A request header as text; bytes that are not UTF-8 survive as surrogates (no 500)."""
    value = request.getHeader(name.encode("latin-1"))
    if value is None:
        return None
    return value.decode("utf-8", "surrogateescape")


def request_headers(request: Request) -> list[tuple[str, str]]:
    """Every request header as text (UTF-8, as Swift's metadata is), in arrival order."""
    items = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = name.decode("latin-1")
        for value in values:
            items.append((key, value.decode("utf-8", "surrogateescape")))
    return items


def required_timestamp(request: Request, name: str = "X-Timestamp") -> Timestamp:
    raw = header(request, name)
    if raw is None:
        raise HTTPError(400, f"Missing {name} header")
    try:
        return Timestamp.parse(raw)
    except ValueError:
        raise HTTPError(400, f"Invalid {name} header: {raw!r}") from None


def storage_policy(request: Request, policies: PolicyCollection) -> StoragePolicy:
    raw = header(request, "X-Backend-Storage-Policy-Index")
    if raw is None:
        return policies.by_index(0) or policies.default
    try:
        index = int(raw)
    except ValueError:
        raise HTTPError(400, f"Invalid X-Backend-Storage-Policy-Index: {raw!r}") from None
    policy = policies.by_index(index)
    if policy is None:
        raise HTTPError(503, f"No policy with index {index}")
    return policy


def integer_header(request: Request, name: str, minimum: int = 0) -> int | None:
    raw = header(request, name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"Invalid {name} header: {raw!r}") from None
    if value < minimum:
        raise HTTPError(400, f"Invalid {name} header: {raw!r}")
    return value
