# -*- test-case-name: txstore.test.integration.test_proxy_integration -*-
"""
The proxy assembled: the application (controllers) wrapped in the configured pipeline of
middlewares, served by the HTTP edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.web.resource import Resource

from txstore.common import config as c
from txstore.proxy.application import ProxyApplication
from txstore.proxy.context import ProxyContext, ProxyServices
from txstore.proxy.edge import ProxyEdge
from txstore.proxy.info import InfoRegistry
from txstore.proxy.pipeline import Stage, build_pipeline, load_pipeline


class ProxyServer:
    """The pipeline over ``context``: ``pipeline`` is the outermost `IApp`."""

    def __init__(self, context: ProxyContext, stages: tuple[Stage, ...]) -> None:
        self.context = context
        self.info = InfoRegistry()
        self.application = ProxyApplication(context, self.info)
        services = ProxyServices(context, self.info)
        self.pipeline = build_pipeline(stages, self.application, services)
        self.background = services.background  # services the middlewares need running

    def resource(self) -> Resource:
        return ProxyEdge(self.pipeline, self.context.metrics).resource()


def stages_from(filters: dict[str, dict[str, str]], pipeline: str | None = None) -> tuple[Stage, ...]:
    """
    The stages a ``proxy.conf`` with these ``[filter:NAME]`` sections (raw options) and this
    ``pipeline`` line (None: the default one) would give: for tests and embedders.
    """
    values: dict[str, Any] = {f"filter:{name}": {"use": f"egg:txstore#{name}", **options}
                              for name, options in filters.items()}
    if pipeline is not None:
        values["pipeline:main"] = {"pipeline": pipeline}
    return load_pipeline(c.LoadedConfig(path=Path("<proxy.conf>").absolute(), values=values))
