# -*- test-case-name: txstore.test.unit.test_qos_middleware -*-
"""
qos: which IO class each object request's disk work runs in, and who may choose it.

The classes are the cluster's (``[io-class:…]`` in ``txstore.conf``, `txstore.qos.classes`).

- An account's class is account sysmeta (``X-Account-Sysmeta-Io-Class``) that only a reseller
  admin sets, with ``X-Account-Io-Class: <class>`` on an account PUT or POST (removed with an
  empty value or ``X-Remove-Account-Io-Class``); anyone else naming it is 403, an unknown class
  400, and nothing is stored. It is shown back as ``X-Account-Io-Class`` in the account's HEAD
  and GET. An account with none is in the default class.
- A request may ask for less: ``X-Io-Class: <class>`` of no more weight than its account's and
  no looser caps (`IOClasses.within`: a lighter class without the account's caps would be a way
  out of them; anything else is 403, an unknown one 400: never quietly ignored), ``X-Io-Rate: <bytes per
  second>`` (``20MB``, ``512KiB``) as its own cap, the tighter of it and the class's.
- So may an object: ``X-Object-Io-Class: <class>`` on its PUT (the same rules) is kept as object
  sysmeta (``X-Object-Sysmeta-Io-Class``, shown back as ``X-Object-Io-Class``), the upload runs in
  it, and the nodes read the object in it whenever it is lower than the reader's class. Like
  all object sysmeta it is the written object's: a POST naming it is refused (400).

The decision (an `IOSpec`: class, tenant = the account, rate) is left in the request's environ
for the object controllers, which send it to the nodes as ``X-Backend-Io-*``; sub-requests made
below this stage (segments, versions) inherit it, and those made above it pass through it.

Where a class has a ``tenant_rate``, the filter also runs the tenant-cap controller in this
proxy (`txstore.qos.controller`: every ``controller_interval`` seconds it splits each capped
tenant's cap between the object nodes by where its bytes move).
"""

from __future__ import annotations

from typing import Any


from txstore.common import config as c
from txstore.middleware.account_quotas import CachedAccounts
from txstore.middleware.base import ApiMiddleware, Middleware
from txstore.proxy.messages import SwiftRequest, SwiftResponse
from txstore.qos.classes import IOClass, IOClasses, IOSpec
from txstore.qos.controller import TenantShareController, object_nodes
from txstore.qos.headers import ENVIRON, OBJECT_SYSMETA

ACCOUNT_HEADER = "X-Account-Io-Class"
REMOVE_HEADER = "X-Remove-Account-Io-Class"
SYSMETA = "X-Account-Sysmeta-Io-Class"
SYSMETA_KEY = "io-class"  # AccountInfo.sysmeta's name for it
REQUEST_CLASS = "X-Io-Class"
REQUEST_RATE = "X-Io-Rate"
OBJECT_HEADER = "X-Object-Io-Class"


class QoS(ApiMiddleware):
    depth = 1

    def __init__(self, app, classes: IOClasses, accounts) -> None:
        self.app = app
        self.classes = classes
        self.accounts = accounts  # (request, account) -> Awaitable[AccountInfo]

    def handle(self, request: SwiftRequest, account: str, container: str | None, obj: str | None):
        if container is None:
            return self._account(request)
        if obj is None or ENVIRON in request.environ:
            return self.app(request)
        return self._object(request, account)

    async def _object(self, request: SwiftRequest, account: str) -> SwiftResponse:
        info = await self.accounts(request, account)
        allowed = self.classes.resolve(info.sysmeta.get(SYSMETA_KEY))
        chosen = allowed
        asked = (request.header(REQUEST_CLASS) or "").strip()
        if asked:
            chosen = self._lower(asked, allowed, "a request")
            if isinstance(chosen, SwiftResponse):
                return self._refused(request, chosen)
        own = request.headers.pop(OBJECT_HEADER)
        if own is not None and request.method != "PUT":
            return self._refuse(request, 400, f"{OBJECT_HEADER} is set when the object is written (PUT or copy); "
                                              "a POST cannot change it")
        if own is not None and own.strip():
            wanted = self._lower(own.strip(), allowed, "an object")
            if isinstance(wanted, SwiftResponse):
                return self._refused(request, wanted)
            request.headers[OBJECT_SYSMETA] = wanted.name
            if wanted != chosen and self.classes.within(wanted, chosen):
                chosen = wanted  # the upload too
        rate = 0
        raw = request.header(REQUEST_RATE)
        if raw is not None:
            try:
                rate = c.size(raw, None)
            except c.BadValue:
                rate = 0
            if rate <= 0:
                return self._refuse(request, 400, f"Invalid {REQUEST_RATE}: bytes per second, such as 20MB or "
                                                  "524288, above 0")
        request.environ[ENVIRON] = IOSpec(chosen.name, account, rate)
        response = await self.app(request)
        if request.method in ("GET", "HEAD") and "swift.source" not in request.environ:
            # (a middleware's own read, a copy's source, keeps the sysmeta: a copy keeps the class)
            value = response.headers.pop(OBJECT_SYSMETA)
            if value:
                response.headers[OBJECT_HEADER] = value
        return response

    async def _account(self, request: SwiftRequest) -> SwiftResponse:
        if request.method in ("PUT", "POST"):
            refusal = self._set_class(request)
            if refusal is not None:
                return refusal
        response = await self.app(request)
        value = response.headers.pop(SYSMETA)
        if value:
            response.headers[ACCOUNT_HEADER] = value
        return response

    def _set_class(self, request: SwiftRequest) -> SwiftResponse | None:
        """Turn an account write's class header into sysmeta; a refusal, else None."""
        value = request.headers.pop(ACCOUNT_HEADER)
        removed = request.headers.pop(REMOVE_HEADER) is not None
        if value is None and not removed:
            return None
        identity = request.identity
        if identity is None or not getattr(identity, "is_reseller_admin", False):
            return self._refuse(request, 403, "Forbidden: only a reseller admin may set an account's IO class")
        value = "" if value is None else value.strip()
        if value and self.classes.get(value) is None:
            return self._refuse(request, 400, f"Unknown IO class {value!r}: the classes are "
                                              f"{', '.join(sorted(self.classes.classes))}")
        request.headers[SYSMETA] = value  # empty: the account server removes it
        return None

    def _lower(self, name: str, allowed: IOClass, who: str) -> IOClass | SwiftResponse:
        """The class ``name`` if it is defined and no higher than ``allowed``, else the refusal to send."""
        wanted = self.classes.get(name)
        if wanted is None:
            return SwiftResponse.text(400, f"Unknown IO class {name!r}: the classes are "
                                           f"{', '.join(sorted(self.classes.classes))}")
        if not self.classes.within(wanted, allowed):
            return SwiftResponse.text(403, f"Forbidden: IO class {name!r} is above the account's {allowed.name!r}"
                                           f" (more weight, or looser caps); {who} may only ask for less")
        return wanted

    @staticmethod
    def _refused(request: SwiftRequest, response: SwiftResponse) -> SwiftResponse:
        request.discard_body()
        return response

    @classmethod
    def _refuse(cls, request: SwiftRequest, status: int, why: str) -> SwiftResponse:
        return cls._refused(request, SwiftResponse.text(status, why))


def _build(app, settings: dict[str, Any], proxy) -> QoS:
    classes = proxy.context.io_classes
    proxy.info.register("qos", **classes.info())
    interval = settings["controller_interval"]
    if interval > 0 and any(cls.tenant_rate for cls in classes):
        rings = proxy.context.rings
        controller = TenantShareController(proxy.context.client, lambda: object_nodes(rings), interval,
                                           settings["controller_timeout"])
        proxy.background.append(controller.service(proxy.reactor))
    return QoS(app, classes, CachedAccounts(proxy.context))


OPTIONS = (
    c.Option("controller_interval", c.number(0), 1.0,
             doc="Seconds between the tenant-cap controller's rounds (0: this proxy runs none)."),
    c.Option("controller_timeout", c.number(0.05), 0.5, doc="Seconds a round waits for each node."),
)
middleware = Middleware("qos", _build, OPTIONS,
                        doc="IO classes: the account's, set by a reseller admin; a request's, only lower.")
