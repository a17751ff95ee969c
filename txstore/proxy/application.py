# -*- test-case-name: txstore.test.integration.test_proxy_integration -*-
"""
The proxy application: the innermost stage of the pipeline, Swift's ``proxy-server`` app.

A Klein app routes each `SwiftRequest` by its decoded path (``/info``, then
``/v1/<account>[/<container>[/<object>]]``, names as Swift gives them: `txstore.common.routing`)
to the account, container or object controller, which answer with a `SwiftResponse`.

Authorization is deferred to here, as in Swift: the auth middleware leaves a
``swift.authorize`` callable in the request's environ, and it is called once the container's
ACLs are known (``authorize(request, account, container, obj, container_info)`` → a
``Decision``). With no auth middleware in the pipeline every request is allowed.
"""

from __future__ import annotations

import json

from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import HTTPException

from zope.interface import implementer

from txstore import __version__
from txstore.common.paths import BadPath, split_api_path
from txstore.common.routing import Routes, swift_routes
from txstore.common.web import HTTPError
from txstore.interfaces import IApp
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.account import handle_account
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.controllers.base import ContainerInfo, container_info
from txstore.proxy.controllers.container import handle_container
from txstore.proxy.controllers.obj import check_name, post_or_delete
from txstore.proxy.controllers.ec_get import get_ec_object
from txstore.proxy.controllers.obj_get import get_object
from txstore.proxy.controllers.obj_put import put_object
from txstore.proxy.info import InfoRegistry
from txstore.proxy.messages import SwiftRequest, SwiftResponse, bad_path_response

AUTHORIZE = "swift.authorize"
ALLOW = {"Allow": "DELETE, GET, HEAD, POST, PUT"}
# The constraints /info lists under "swift", by their Swift names.
LIMITS = ("max_file_size", "max_meta_name_length", "max_meta_value_length", "max_meta_count",
          "max_meta_overall_size", "max_header_size", "max_object_name_length", "container_listing_limit",
          "account_listing_limit", "max_account_name_length", "max_container_name_length")


def api_endpoint(segments: list[str | None]) -> tuple[str, dict[str, str]]:
    """
    The route of a ``/v1/...`` path from its `split_api_path` segments, without werkzeug's match
    (a tenth of a small request's routing): the three API routes differ only in how many names
    the path has. ``test_application`` checks that both always agree.
    """
    _version, account, container, obj = segments
    if obj is not None:
        return "object", {"account": account, "container": container, "obj": obj}
    if container is not None:
        return "container", {"account": account, "container": container}
    return "account", {"account": account}


@implementer(IApp)
class ProxyApplication:
    """The controllers behind Klein routes; an `IApp`."""

    app = swift_routes(Klein())
    log = Logger()

    def __init__(self, context: ProxyContext, info: InfoRegistry) -> None:
        self.context = context
        self.info = info
        limits = context.constraints
        info.register(
            "swift",
            version=f"txstore-{__version__}",
            **{name: getattr(limits, name) for name in LIMITS},
            account_autocreate=context.account_autocreate,
            policies=[
                {"name": p.name, "aliases": ", ".join(p.all_names), **({"default": True} if p.is_default else {})}
                for p in context.policies if not p.deprecated
            ],
        )
        self._routes = Routes(self.app)

    async def __call__(self, request: SwiftRequest) -> SwiftResponse:
        try:
            path = request.decoded_path
            if path == "/info":
                endpoint, names = self._routes.match(path, request.method)
            else:
                # Swift's answers for malformed API paths (`split_api_path`); a well-formed one
                # names its route by the segments it has (what werkzeug's match would say).
                endpoint, names = api_endpoint(list(split_api_path(path)))
            return await self._routes.call(endpoint, request, **names)
        except BadPath as err:
            request.discard_body()
            return bad_path_response(err)
        except HTTPError as err:
            request.discard_body()
            return SwiftResponse.text(err.status, err.reason, err.headers)
        except HTTPException as err:  # werkzeug's: no route for this path
            request.discard_body()
            return SwiftResponse.text(err.code or 404, "Not Found" if err.code == 404 else err.name)

    # --- routes ------------------------------------------------------------------------------

    @app.route("/info", methods=None)
    async def info_endpoint(self, request: SwiftRequest) -> SwiftResponse:
        if request.method not in ("GET", "HEAD"):
            return SwiftResponse.text(405, "Method Not Allowed", {"Allow": "GET, HEAD"})
        body = json.dumps(self.info.as_dict(), sort_keys=True).encode()
        response = SwiftResponse(200, body=b"" if request.method == "HEAD" else body)
        response.headers["Content-Type"] = "application/json; charset=utf-8"
        response.headers["Content-Length"] = str(len(body))
        return response

    @app.route("/v1/<name:account>", methods=None)
    @app.route("/v1/<name:account>/", methods=None)
    async def account(self, request: SwiftRequest, account: str) -> SwiftResponse:
        self._check_account(account)
        api = await self._authorized(request, account, None, None, None)
        if isinstance(api, SwiftResponse):
            return api
        return await handle_account(self.context, api)

    @app.route("/v1/<name:account>/<name:container>", methods=None)
    @app.route("/v1/<name:account>/<name:container>/", methods=None)
    async def container(self, request: SwiftRequest, account: str, container: str) -> SwiftResponse:
        self._check_account(account)
        info = None
        if request.method in ("GET", "HEAD"):
            info = await container_info(self.context, account, container, request.trans_id)
        api = await self._authorized(request, account, container, None, info)
        if isinstance(api, SwiftResponse):
            return api
        return await handle_container(self.context, api)

    @app.route("/v1/<name:account>/<name:container>/<objname:obj>", methods=None)
    async def object(self, request: SwiftRequest, account: str, container: str, obj: str) -> SwiftResponse:
        self._check_account(account)
        info = await container_info(self.context, account, container, request.trans_id)
        api = await self._authorized(request, account, container, obj, info)
        if isinstance(api, SwiftResponse):
            return api
        if info.status == 503:
            raise APIError(503, "Service Unavailable: container servers did not answer")
        if not info.exists and api.method not in ("GET", "HEAD"):
            # A read asks the object's nodes even so (policy 0, as Swift's proxy does): the
            # container's replicas may not all have its database yet, and the objects are there.
            raise APIError(404, "Not Found: no such container")
        check_name(self.context, api)
        if api.method in ("GET", "HEAD"):
            policy = self.context.policies.by_index(info.policy_index)
            if policy is not None and policy.ec is not None:
                return await get_ec_object(self.context, api, info, policy)
            return await get_object(self.context, api, info)
        if api.method == "PUT":
            return await put_object(self.context, api, info)
        if api.method in ("POST", "DELETE"):
            return await post_or_delete(self.context, api, info)
        raise APIError(405, "Method Not Allowed", ALLOW)

    # --- shared --------------------------------------------------------------------------------

    def _check_account(self, account: str) -> None:
        if len(account.encode("utf-8")) > self.context.constraints.max_account_name_length:
            raise APIError(400, "Account name too long")

    async def _authorized(
        self, request: SwiftRequest, account: str, container: str | None, obj: str | None,
        info: ContainerInfo | None,
    ) -> APIRequest | SwiftResponse:
        """The request as the controllers take it, or the refusal the authorizer decided."""
        authorize = request.environ.get(AUTHORIZE)
        is_owner = False
        if authorize is not None:
            decision = authorize(request, account, container, obj, info)
            if not decision.allowed:
                request.discard_body()
                return SwiftResponse.text(decision.status, "Unauthorized" if decision.status == 401 else "Forbidden")
            is_owner = decision.is_owner
        return APIRequest(request, account, container, obj, is_owner)
