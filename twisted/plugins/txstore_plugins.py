"""
twistd plugins: ``twistd proxy`` and ``twistd objectnode``.

This directory must never get an ``__init__.py``: ``twisted.plugins`` is Twisted's own package,
and Twisted finds this file by scanning every ``twisted/plugins`` directory on ``sys.path``.
"""

from twisted.application.service import ServiceMaker

proxy = ServiceMaker(
    "txstore proxy", "txstore.proxy.tap", "txstore's Swift v1 API server (client-facing).", "proxy"
)
objectnode = ServiceMaker(
    "txstore object node",
    "txstore.node.tap",
    "txstore's storage node: account, container and object storage on this host's devices.",
    "objectnode",
)
