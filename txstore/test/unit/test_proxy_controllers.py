"""
Tests for the proxy controllers (txstore.proxy.controllers) against fake storage nodes.

Two kinds of fakes:

- `FakeBackend` stands in for `BackendClient` in memory: each node (``ip:port/device``) answers
  as scripted, and every request it got is recorded. The account and container controllers,
  the replica fan-out and the info cache are driven through it synchronously, with a `Clock`.
- `FakeObjectNode` is a tiny scripted HTTP server on 127.0.0.1, one per device of the object
  ring, for the streamed object paths: the real `ProxyServer` behind a `StreamingSite` is
  driven over real sockets by treq (or, where ``Expect: 100-continue`` matters, a raw client).
"""

from __future__ import annotations

import gc
import hashlib
import socket
import time
import zlib
from pathlib import Path

import treq
from attrs import evolve, field, frozen
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed

from txstore.common.backend_client import BackendClient, BackendResponse
from txstore.common.hashing import PathHasher
from txstore.common.policies import DEFAULT_POLICIES
from txstore.common.streaming import StreamingSite
from txstore.proxy.context import ProxyContext
from txstore.proxy.controllers.account import handle_account
from txstore.proxy.controllers.api import APIError, APIRequest
from txstore.proxy.messages import HeaderMap, SwiftRequest, SwiftResponse
from txstore.proxy.controllers.base import (
    ContainerInfo,
    account_status,
    container_info,
    read_from_replicas,
    write_to_replicas,
)
from txstore.proxy.controllers.container import handle_container
from txstore.proxy.error_limiter import ErrorLimiter
from txstore.proxy.info_cache import InMemoryInfoCache
from txstore.proxy.application import ProxyApplication
from txstore.proxy.info import InfoRegistry
from txstore.proxy.server import ProxyServer, stages_from
from txstore.common.web import ResponseAborted
from txstore.test.unit.test_middleware import Chunks
from txstore.ring.builder import RingBuilder
from txstore.ring.ring import Node, Ring
from txstore.ring.ringset import RingSet
from txstore.test.backend_fake import Call, Cut, FakeBackend, down, reply, slow, usual  # noqa: F401 (others import them here)
from txstore.proxy.controllers import obj_put
from txstore.test.support import ChunkedBody, RawClient, temp_dir

HASHER = PathHasher(b"", b"s")
ACCOUNT = "AUTH_test"
NOW = 1_700_000_000.0


def build_ring(path: Path, ips: list[str], ports: list[int]) -> Ring:
    """Six devices in six zones, three replicas, part power 4."""
    builder = RingBuilder(4, 3, 1)
    for zone, (ip, port) in enumerate(zip(ips, ports), start=1):
        builder.add_dev(region=1, zone=zone, ip=ip, port=port, device=f"sd{zone}", weight=100)
    builder.rebalance(seed=1)
    builder.get_ring().save(path)
    return Ring(path, HASHER)


def fake_rings(directory: Path, objects: Ring | None = None) -> RingSet:
    """Account, container and object rings on unused loopback addresses (ports 6002, 6001, 6000)."""
    ips = [f"127.0.1.{i}" for i in range(1, 7)]  # loopback: no test may reach another network
    account = build_ring(directory / "account.ring.gz", ips, [6002] * 6)
    container = build_ring(directory / "container.ring.gz", ips, [6001] * 6)
    if objects is None:
        objects = build_ring(directory / "object.ring.gz", ips, [6000] * 6)
    return RingSet(account=account, container=container, objects={0: objects})


def key(node: Node) -> str:
    return f"{node.ip}:{node.port}/{node.device_name}"


class ControllerCase(SynchronousTestCase):
    """A ProxyContext on a fake clock and the in-memory backend."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.backend = FakeBackend()
        self.rings = fake_rings(temp_dir(self))
        self.errors = ErrorLimiter(self.clock.seconds, limit=3, interval=60)
        self.context = ProxyContext(
            reactor=self.clock, rings=self.rings, policies=DEFAULT_POLICIES, client=self.backend,
            cache=InMemoryInfoCache(self.clock.seconds), errors=self.errors,
        )
        ring = self.rings.container
        self.cpart = ring.get_part(ACCOUNT, "c")
        self.cprimary = [key(n) for n in ring.get_part_nodes(self.cpart)]
        self.chandoff = [key(n) for n in ring.get_more_nodes(self.cpart)]
        ring = self.rings.account
        self.apart = ring.get_part(ACCOUNT)
        self.aprimary_nodes = ring.get_part_nodes(self.apart)
        self.aprimary = [key(n) for n in self.aprimary_nodes]
        self.ahandoff = [key(n) for n in ring.get_more_nodes(self.apart)]
        # the fixture is what the tests assume: three primaries and three handoffs
        self.assertEqual((len(self.cprimary), len(self.chandoff)), (3, 3))
        self.assertEqual((len(self.aprimary), len(self.ahandoff)), (3, 3))

    def api(self, method: str, container: str | None = "c", headers: dict[str, str] | None = None,
            query: str = "", owner: bool = True) -> APIRequest:
        path = f"/v1/{ACCOUNT}" + (f"/{container}" if container else "")
        request = SwiftRequest(method, path, HeaderMap(headers or {}), query.lstrip("?"), trans_id="tx-test")
        return APIRequest(request, ACCOUNT, container, None, owner)

    @staticmethod
    def answered(response: SwiftResponse):
        """(status, headers as twisted's Headers, body) of a controller's response."""
        headers = Headers()
        for name, value in response.headers.items():
            headers.setRawHeaders(name.encode("latin-1"), [value.encode("latin-1")])
        return response.status, headers, response.body

    def container(self, method: str, headers: dict[str, str] | None = None, owner: bool = True):
        """handle_container's (status, response headers, body) as the client would get them."""
        api = self.api(method, headers=headers, owner=owner)
        return self.answered(self.successResultOf(Deferred.fromCoroutine(handle_container(self.context, api))))

    def account(self, method: str, headers: dict[str, str] | None = None, query: str = ""):
        api = self.api(method, container=None, headers=headers, query=query)
        return self.answered(self.successResultOf(Deferred.fromCoroutine(handle_account(self.context, api))))

    def refused(self, coroutine) -> APIError:
        return self.failureResultOf(Deferred.fromCoroutine(coroutine), APIError).value

    def write(self, method: str = "PUT", headers_for=None) -> tuple[int, list[BackendResponse]]:
        ring = self.rings.container
        headers_for = headers_for or (lambda i, n: {"X-Timestamp": "0000000002.00000", "X-Replica": str(i)})
        return self.successResultOf(Deferred.fromCoroutine(
            write_to_replicas(self.context, ring, self.cpart, method, (ACCOUNT, "c"), headers_for)
        ))

    def read(self, newest: bool = False):
        return self.successResultOf(Deferred.fromCoroutine(read_from_replicas(
            self.context, self.rings.container, self.cpart, "HEAD", (ACCOUNT, "c"), {"X-Trans-Id": "tx"},
            newest=newest,
        )))


class WriteQuorumTests(ControllerCase):
    def test_all_three_created(self) -> None:
        status, answers = self.write()
        self.assertEqual((status, [a.status for a in answers]), (201, [201, 201, 201]))
        self.assertEqual(self.backend.asked(), self.cprimary)
        for index, call in enumerate(self.backend.calls):
            device = call.node.rsplit("/", 1)[1]
            self.assertEqual(call.path, f"/{device}/{self.cpart}/{ACCOUNT}/c")
            self.assertEqual(call.headers["X-Replica"], str(index))

    def test_two_of_three_created_when_one_answers_otherwise(self) -> None:
        self.backend.nodes[self.cprimary[2]] = reply(409)
        status, answers = self.write()
        self.assertEqual((status, sorted(a.status for a in answers)), (201, [201, 201, 409]))
        self.assertEqual(self.backend.asked(), self.cprimary)  # a real answer is not replaced

    def test_two_of_three_created_when_one_slot_finds_no_node(self) -> None:
        for node in [self.cprimary[0], *self.chandoff]:
            self.backend.nodes[node] = down
        status, answers = self.write()
        self.assertEqual((status, len(answers)), (201, 2))
        self.assertEqual(self.backend.asked(), [self.cprimary[0], *self.chandoff, *self.cprimary[1:]])

    def test_one_of_three_is_unavailable(self) -> None:
        for node in [self.cprimary[0], self.cprimary[2], *self.chandoff]:
            self.backend.nodes[node] = down
        status, answers = self.write()
        self.assertEqual((status, [a.status for a in answers]), (503, [201]))
        status, _, _ = self.container("PUT")
        self.assertEqual(status, 503)

    def test_no_majority_of_one_kind_is_unavailable(self) -> None:
        self.backend.nodes[self.cprimary[0]] = reply(404)
        for node in [self.cprimary[1], *self.chandoff]:
            self.backend.nodes[node] = down
        status, answers = self.write()
        self.assertEqual((status, sorted(a.status for a in answers)), (503, [201, 404]))
        # a 404 and a 409 are both the client's kind of answer: a majority of 4xx
        self.backend.nodes = {self.cprimary[0]: reply(404), self.cprimary[1]: reply(409)}
        self.assertEqual(self.write()[0], 404)

    def test_failed_primary_replaced_by_handoff_with_the_same_headers(self) -> None:
        for failure in (down, slow, reply(507), reply(503), reply(500)):
            self.backend.calls.clear()
            self.backend.nodes = {self.cprimary[1]: failure}
            status, _, _ = self.container("PUT", {"X-Container-Meta-Color": "blue"})
            self.assertEqual(status, 201)
            puts = [c for c in self.backend.calls if c.method == "PUT"]
            self.assertEqual([c.node for c in puts], [self.cprimary[0], self.cprimary[1], self.chandoff[0],
                                                      self.cprimary[2]])
            self.assertEqual(puts[2].headers, puts[1].headers)
            self.assertEqual(puts[2].headers["X-Container-Meta-Color"], "blue")
            self.assertEqual(puts[2].path, f"/{self.chandoff[0].rsplit('/', 1)[1]}/{self.cpart}/{ACCOUNT}/c")
            self.errors.success(self.rings.container.get_part_nodes(self.cpart)[1])

    def test_each_failed_primary_gets_its_own_handoff(self) -> None:
        self.backend.nodes = {self.cprimary[0]: down, self.cprimary[2]: reply(507)}
        status, _, _ = self.container("PUT")
        self.assertEqual(status, 201)
        puts = {c.node: c for c in self.backend.calls if c.method == "PUT"}
        self.assertEqual(set(puts), {*self.cprimary, *self.chandoff[:2]})
        self.assertEqual(puts[self.chandoff[0]].headers, puts[self.cprimary[0]].headers)
        self.assertEqual(puts[self.chandoff[1]].headers, puts[self.cprimary[2]].headers)

    def test_not_found_majority(self) -> None:
        self.backend.nodes = {self.cprimary[0]: reply(404), self.cprimary[2]: reply(404)}
        status, _, _ = self.container("DELETE")
        self.assertEqual(status, 404)
        self.assertEqual(self.backend.asked(), self.cprimary)

    def test_client_errors_are_answered_as_they_are(self) -> None:
        self.backend.default = reply(400, b"Invalid X-Timestamp\n")
        status, headers, body = self.container("POST")
        self.assertEqual((status, body), (400, b"Invalid X-Timestamp\n"))
        self.assertEqual(self.backend.asked(), self.cprimary)  # no handoff for a 400
        self.backend.calls.clear()
        self.backend.default = usual
        self.backend.nodes = {self.cprimary[0]: reply(412), self.cprimary[1]: reply(412)}
        status, _, _ = self.container("POST")
        self.assertEqual(status, 412)
        self.assertEqual(self.backend.asked(), self.cprimary)

    def test_conflict_on_delete_says_why(self) -> None:
        self.backend.default = reply(409)
        status, _, body = self.container("DELETE")
        self.assertEqual((status, body), (409, b"There was a conflict when trying to complete your request.\n"))


class ReadTests(ControllerCase):
    def test_first_success_in_ring_order(self) -> None:
        self.backend.nodes = {n: reply(204, x_container_object_count=str(i)) for i, n in enumerate(self.cprimary)}
        result = self.read()
        self.assertEqual(result.response.header("x-container-object-count"), "0")
        self.assertEqual(self.backend.asked(), self.cprimary[:1])

    def test_failures_and_not_found_fall_through_to_handoffs(self) -> None:
        self.backend.nodes = {
            self.cprimary[0]: down, self.cprimary[1]: reply(404), self.cprimary[2]: reply(507),
            self.chandoff[0]: slow, self.chandoff[1]: reply(204, x_container_object_count="7"),
        }
        result = self.read()
        self.assertEqual((result.response.status, result.response.header("x-container-object-count")), (204, "7"))
        self.assertEqual(self.backend.asked(), [*self.cprimary, *self.chandoff[:2]])
        self.assertEqual(result.statuses, (503, 404, 507, 503, 204))

    def test_newest_not_found_when_all_say_so(self) -> None:
        stamps = ["0000000003.00000", "0000000009.00000", "0000000005.00000"]
        self.backend.nodes = {n: reply(404, x_backend_timestamp=t) for n, t in zip(self.cprimary, stamps)}
        result = self.read()
        self.assertEqual((result.response.status, result.response.header("x-backend-timestamp")),
                         (404, "0000000009.00000"))
        self.assertEqual(self.backend.asked(), self.cprimary)  # three primaries agreeing: no handoff

    def test_not_found_and_failure_asks_a_handoff(self) -> None:
        self.backend.nodes = {self.cprimary[0]: reply(404), self.cprimary[1]: down, self.cprimary[2]: reply(404),
                              self.chandoff[0]: reply(404, x_backend_timestamp="0000000004.00000")}
        result = self.read()
        self.assertEqual((result.response.status, result.response.header("x-backend-timestamp")),
                         (404, "0000000004.00000"))
        self.assertEqual(self.backend.asked(), [*self.cprimary, self.chandoff[0]])

    def test_no_answer_anywhere_is_unavailable(self) -> None:
        self.backend.default = down
        error = self.refused(handle_container(self.context, self.api("GET")))
        self.assertEqual(error.status, 503)
        self.assertEqual(self.backend.asked(), [*self.cprimary, *self.chandoff])

    def test_newest(self) -> None:
        self.backend.nodes = {
            self.cprimary[0]: reply(204, x_backend_timestamp="0000000002.00000", x_container_object_count="2"),
            self.cprimary[1]: reply(204, x_backend_timestamp="0000000007.00000", x_container_object_count="7"),
            self.cprimary[2]: reply(204, x_backend_timestamp="0000000005.00000", x_container_object_count="5"),
        }
        status, headers, _ = self.container("HEAD", {"X-Newest": "true"})
        self.assertEqual((status, headers.getRawHeaders(b"x-container-object-count")), (204, [b"7"]))
        self.assertFalse(headers.hasHeader(b"x-backend-timestamp"))
        self.assertEqual(sorted(self.backend.asked()), sorted(self.cprimary))
        self.backend.calls.clear()
        status, headers, _ = self.container("HEAD")
        self.assertEqual(headers.getRawHeaders(b"x-container-object-count"), [b"2"])

    def test_newest_skips_failures_and_may_be_a_deletion(self) -> None:
        self.backend.nodes = {
            self.cprimary[0]: reply(204, x_backend_timestamp="0000000002.00000"),
            self.cprimary[1]: down,
            self.cprimary[2]: reply(404, x_backend_timestamp="0000000005.00000"),
        }
        result = self.read(newest=True)
        self.assertEqual(result.response.status, 404)
        self.backend.nodes[self.cprimary[2]] = reply(503, x_backend_timestamp="0000000009.00000")
        result = self.read(newest=True)
        self.assertEqual(result.response.header("x-backend-timestamp"), "0000000002.00000")

    def test_client_errors_from_a_replica_are_answered(self) -> None:
        for status in (400, 412):
            self.backend.calls.clear()
            self.backend.nodes = {self.cprimary[0]: reply(status, b"bad marker\n")}
            answered, _, body = self.container("GET")
            self.assertEqual((answered, body), (status, b"bad marker\n"))
            self.assertEqual(self.backend.asked(), self.cprimary[:1])

    def test_acl_headers_only_for_the_owner(self) -> None:
        self.backend.default = reply(204, x_container_read=".r:*", x_container_meta_a="b")
        _, headers, _ = self.container("HEAD", owner=False)
        self.assertEqual((headers.getRawHeaders(b"x-container-read"), headers.getRawHeaders(b"x-container-meta-a")),
                         (None, [b"b"]))
        _, headers, _ = self.container("HEAD", owner=True)
        self.assertEqual(headers.getRawHeaders(b"x-container-read"), [b".r:*"])

    def test_a_put_names_a_policy_only_when_asked_to(self) -> None:
        """So a re-PUT without X-Storage-Policy leaves a container of another policy in it (202)."""
        self.backend.default = reply(201)
        for headers, sent in (({}, None), ({"X-Storage-Policy": "Policy-0"}, "0")):
            self.backend.calls.clear()
            self.container("PUT", headers)
            puts = [c for c in self.backend.calls if c.method == "PUT"]
            self.assertEqual({c.headers.get("X-Backend-Storage-Policy-Index") for c in puts}, {sent}, headers)
        self.assertEqual(self.refused(handle_container(self.context, self.api("PUT", headers={
            "X-Storage-Policy": "bronze"}))).status, 400)

    def test_acls_and_sync_only_from_and_for_the_owner(self) -> None:
        """Swift's swift_owner_headers: a writer who is not the owner can neither set nor see them."""
        self.backend.default = reply(204, x_container_sync_key="secret", x_container_sync_to="//r/c/AUTH_b/c",
                                     x_container_write="jdoe", x_container_meta_a="b")
        for owner in (False, True):
            _, headers, _ = self.container("HEAD", owner=owner)
            for name, value in ((b"x-container-sync-key", b"secret"), (b"x-container-sync-to", b"//r/c/AUTH_b/c"),
                                (b"x-container-write", b"jdoe")):
                self.assertEqual(headers.getRawHeaders(name), [value] if owner else None, (name, owner))
            self.assertEqual(headers.getRawHeaders(b"x-container-meta-a"), [b"b"])
        self.backend.default = reply(204)
        for owner in (False, True):
            self.backend.calls.clear()
            self.container("POST", {"X-Container-Read": "frank", "X-Remove-Container-Write": "x",
                                    "X-Container-Sync-Key": "new", "X-Container-Meta-A": "c"}, owner=owner)
            sent = {k.lower(): v for k, v in self.backend.calls[0].headers.items()}
            self.assertEqual([sent.get(n) for n in ("x-container-read", "x-container-write", "x-container-sync-key")],
                             ["frank", "", "new"] if owner else [None, None, None])
            self.assertEqual(sent["x-container-meta-a"], "c")

    def test_tempurl_keys_only_for_the_owner(self) -> None:
        # Swift's swift_owner_headers: shown to the owner only, set by the owner only
        self.backend.default = reply(204, x_container_meta_temp_url_key="k", x_container_meta_temp_url_key_2="k2",
                                     x_container_meta_a="b", x_account_meta_temp_url_key="ak")
        for owner, shown in ((False, None), (True, [b"k"])):
            _, headers, _ = self.container("HEAD", owner=owner)
            self.assertEqual(headers.getRawHeaders(b"x-container-meta-temp-url-key"), shown)
            self.assertEqual(headers.getRawHeaders(b"x-container-meta-temp-url-key-2"), shown and [b"k2"])
            self.assertEqual(headers.getRawHeaders(b"x-container-meta-a"), [b"b"])
            api = self.api("HEAD", container=None, owner=owner)
            response = self.successResultOf(Deferred.fromCoroutine(handle_account(self.context, api)))
            self.assertEqual(response.headers.get("x-account-meta-temp-url-key"), shown and "ak")
        self.backend.default = reply(204)
        for owner in (False, True):
            self.backend.calls.clear()
            self.container("POST", {"X-Container-Meta-Temp-URL-Key": "new", "X-Container-Meta-A": "c"}, owner=owner)
            sent = {k.lower(): v for k, v in self.backend.calls[0].headers.items()}
            self.assertEqual(sent.get("x-container-meta-temp-url-key"), "new" if owner else None)
            self.assertEqual(sent["x-container-meta-a"], "c")

    def test_account_of_which_all_replicas_say_not_found(self) -> None:
        self.backend.default = reply(404)
        status, headers, body = self.account("GET", query="?format=json")
        self.assertEqual((status, body, headers.getRawHeaders(b"x-account-container-count")), (200, b"[]", [b"0"]))
        # the newest 404 says the account was deleted: not shown as an empty account
        self.backend.nodes = {self.aprimary[1]: reply(404, x_account_status="Deleted",
                                                      x_backend_timestamp="0000000005.00000")}
        status, headers, _ = self.account("GET")
        self.assertEqual(status, 404)
        self.assertFalse(headers.hasHeader(b"x-account-container-count"))

    def test_account_unavailable(self) -> None:
        self.backend.default = slow
        error = self.refused(handle_account(self.context, self.api("HEAD", container=None)))
        self.assertEqual(error.status, 503)
        self.assertEqual(self.backend.asked(), [*self.aprimary, *self.ahandoff])


class InfoCacheTests(ControllerCase):
    def test_second_lookup_is_cached_and_a_write_forgets(self) -> None:
        self.backend.default = reply(204, x_container_read=".r:*", x_backend_storage_policy_index="0",
                                     x_container_object_count="3")
        info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual(info, ContainerInfo(204, ".r:*", None, 0, 3, 0))
        self.assertEqual(len(self.backend.calls), 1)
        again = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual((again, len(self.backend.calls)), (info, 1))
        self.backend.default = usual
        self.container("POST", {"X-Container-Read": "test:tester"})
        self.backend.calls.clear()
        self.backend.default = reply(204, x_container_read="test:tester")
        info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual((info.read_acl, self.backend.asked("HEAD")), ("test:tester", self.cprimary[:1]))

    def test_sysmeta_and_the_plain_location_are_kept(self) -> None:
        self.backend.default = reply(204, x_container_sysmeta_versions_location="arch",
                                     x_container_sysmeta_versions_mode="history", x_versions_location="old")
        info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual((info.sysmeta, info.versions),
                         ({"versions-location": "arch", "versions-mode": "history"}, "old"))

    def test_expires(self) -> None:
        for _ in range(2):
            info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual((info.status, len(self.backend.calls)), (204, 1))
        self.clock.advance(self.context.info_ttl - 0.5)
        self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual(len(self.backend.calls), 1)
        self.clock.advance(0.5)
        self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual(len(self.backend.calls), 2)

    def test_a_not_found_is_believed_a_tenth_as_long(self) -> None:
        self.backend.default = reply(404)
        for _ in range(2):
            info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual((info.status, info.exists, len(self.backend.calls)), (404, False, 3))
        self.clock.advance(self.context.info_ttl / 10 - 0.05)
        self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual(len(self.backend.calls), 3)
        self.backend.default = usual  # created meanwhile, through another proxy
        self.clock.advance(0.05)
        info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual((info.status, len(self.backend.calls)), (204, 4))

    def test_unavailable_is_not_cached(self) -> None:
        self.backend.default = down
        info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual(info.status, 503)
        self.backend.default = usual
        self.backend.calls.clear()
        info = self.successResultOf(Deferred.fromCoroutine(container_info(self.context, ACCOUNT, "c")))
        self.assertEqual((info.status, len(self.backend.calls)), (204, 1))

    def test_account_status_cached_and_forgotten_by_a_container_put(self) -> None:
        for _ in range(2):
            self.assertEqual(self.successResultOf(Deferred.fromCoroutine(account_status(self.context, ACCOUNT))), 204)
        self.assertEqual(self.backend.asked(), self.aprimary[:1])
        self.container("PUT")
        self.assertEqual(self.backend.asked("HEAD"), self.aprimary[:1])  # the PUT used the cached status
        self.backend.calls.clear()
        self.successResultOf(Deferred.fromCoroutine(account_status(self.context, ACCOUNT)))
        self.assertEqual(self.backend.asked(), self.aprimary[:1])


class ContainerPutTests(ControllerCase):
    def test_autocreates_the_account_first(self) -> None:
        for node in self.aprimary:
            self.backend.nodes[node] = lambda call: BackendResponse(404 if call.method == "HEAD" else 201, {}, b"")
        self.clock.advance(0.5)
        status, _, _ = self.container("PUT")
        self.assertEqual(status, 201)
        self.assertEqual(
            [(c.method, c.node) for c in self.backend.calls],
            [("HEAD", n) for n in self.aprimary] + [("PUT", n) for n in self.aprimary]
            + [("PUT", n) for n in self.cprimary],
        )
        account_puts = self.backend.calls[3:6]
        self.assertEqual({c.path for c in account_puts}, {f"/{n.device_name}/{self.apart}/{ACCOUNT}"
                                                          for n in self.aprimary_nodes})
        self.assertEqual({c.headers["X-Timestamp"] for c in account_puts}, {"1700000000.50000"})
        container_puts = self.backend.calls[6:]
        told = [(c.headers["X-Account-Host"], c.headers["X-Account-Device"], c.headers["X-Account-Partition"])
                for c in container_puts]
        self.assertEqual(told, [(f"{n.ip}:{n.port}", n.device_name, str(self.apart)) for n in self.aprimary_nodes])
        self.assertEqual(len(set(told)), 3)

    def test_account_that_cannot_be_created(self) -> None:
        for node in [*self.aprimary, *self.ahandoff]:
            self.backend.nodes[node] = lambda call: reply(404)(call) if call.method == "HEAD" else down(call)
        error = self.refused(handle_container(self.context, self.api("PUT")))
        self.assertEqual(error.status, 503)
        self.assertEqual([n for n in self.backend.asked() if n in self.cprimary + self.chandoff], [])

    def test_no_autocreate(self) -> None:
        self.context = evolve(self.context, account_autocreate=False)
        self.backend.default = reply(404)
        error = self.refused(handle_container(self.context, self.api("PUT")))
        self.assertEqual(error.status, 404)
        self.assertEqual(self.backend.asked("PUT"), [])

    def test_acl_syntax_errors(self) -> None:
        for name, value in (("X-Container-Read", ".xyz"), ("X-Container-Write", ".r:*"),
                            ("X-Container-Read", "a b")):
            for method in ("PUT", "POST"):
                error = self.refused(handle_container(self.context, self.api(method, headers={name: value})))
                self.assertEqual(error.status, 400)
                self.assertIn(name.lower(), error.reason)
        self.assertEqual(self.backend.calls, [])
        status, _, _ = self.container("POST", {"X-Container-Read": ".r:*,.rlistings", "X-Remove-Container-Write": "x"})
        self.assertEqual(status, 204)
        self.assertEqual({(c.headers["X-Container-Read"], c.headers["x-container-write"]) for c in self.backend.calls},
                         {(".r:*,.rlistings", "")})

    def test_a_versioning_location_no_middleware_took_is_refused(self) -> None:
        # versioned_writes takes them into sysmeta; one that reaches the controller is refused,
        # not stored and ignored. An empty one (clearing older plain metadata) passes on.
        for name in ("X-Versions-Location", "X-History-Location"):
            for method in ("PUT", "POST"):
                error = self.refused(handle_container(self.context, self.api(method, headers={name: "archive"})))
                self.assertEqual((error.status, error.reason), (412, "Versioned Writes is disabled"))
        self.assertEqual(self.backend.calls, [])
        status, _, _ = self.container("POST", {"X-Versions-Location": "", "X-History-Location": ""})
        self.assertEqual(status, 204)
        self.assertEqual({c.headers["X-Versions-Location"] for c in self.backend.calls}, {""})

    def test_account_post_autocreates(self) -> None:
        for node in self.aprimary:
            self.backend.nodes[node] = lambda call: BackendResponse(404 if call.method == "POST" else 201, {}, b"")
        status, _, _ = self.account("POST", {"X-Account-Meta-Color": "red"})
        self.assertEqual(status, 204)
        self.assertEqual([c.method for c in self.backend.calls], ["POST"] * 3 + ["PUT"] * 3)
        self.assertEqual({c.headers["X-Account-Meta-Color"] for c in self.backend.calls}, {"red"})


class ErrorLimitingTests(ControllerCase):
    def test_writes_skip_a_limited_node_until_the_interval_passes(self) -> None:
        self.backend.nodes[self.cprimary[1]] = down
        for _ in range(3):
            self.assertEqual(self.write()[0], 201)
        self.assertEqual(len(self.backend.to(self.cprimary[1])), 3)
        self.backend.calls.clear()
        self.assertEqual(self.write()[0], 201)
        self.assertEqual(self.backend.asked(), [self.cprimary[0], self.chandoff[0], self.cprimary[2]])
        self.clock.advance(59)
        self.write()
        self.assertEqual(len(self.backend.to(self.cprimary[1])), 0)
        self.backend.calls.clear()
        self.clock.advance(1)
        del self.backend.nodes[self.cprimary[1]]
        self.assertEqual(self.write()[0], 201)
        self.assertEqual(self.backend.asked(), self.cprimary)

    def test_reads_ask_a_limited_node_last(self) -> None:
        self.backend.nodes[self.cprimary[0]] = reply(503)
        for _ in range(3):
            self.assertEqual(self.read().response.status, 204)
        self.assertEqual(self.backend.asked(), [self.cprimary[0], self.cprimary[1]] * 3)
        self.backend.calls.clear()
        self.backend.nodes = {self.cprimary[0]: usual, self.cprimary[1]: reply(404), self.cprimary[2]: down}
        self.assertEqual(self.read().response.status, 204)
        self.assertEqual(self.backend.asked(), [self.cprimary[1], self.cprimary[2], self.cprimary[0]])


# --- scripted object nodes on 127.0.0.1 ---------------------------------------------------------


class ObjectControllerTests(ControllerCase):
    """The object controller on a Clock, against the in-memory backend (objects included)."""

    def setUp(self) -> None:
        super().setUp()
        self.app = ProxyApplication(self.context, InfoRegistry())
        ring = self.rings.object_ring(0)
        self.opart = ring.get_part(ACCOUNT, "c", "o")
        self.oprimary = [key(n) for n in ring.get_part_nodes(self.opart)]
        self.ohandoff = [key(n) for n in ring.get_more_nodes(self.opart)]

    def call(self, method: str, headers: dict[str, str] | None = None, body=None) -> SwiftResponse:
        request = SwiftRequest(method, f"/v1/{ACCOUNT}/c/o", HeaderMap(headers or {}), trans_id="tx-obj",
                               **({"body": body} if body is not None else {}))
        return self.successResultOf(Deferred.fromCoroutine(self.app(request)))

    def read_all(self, response: SwiftResponse) -> bytes:
        if not response.streamed:
            return response.body
        data = b""
        while chunk := self.successResultOf(response.body.read()):
            data += chunk
        return data

    def test_put_streams_the_body_to_every_primary(self) -> None:
        body = b"x" * 200_000
        response = self.call("PUT", {"Content-Length": str(len(body))}, Chunks([body[:70_000], body[70_000:]]))
        self.assertEqual((response.status, response.headers["ETag"]), (201, hashlib.md5(body).hexdigest()))
        puts = [c for c in self.backend.calls if c.method == "PUT"]
        self.assertEqual([c.node for c in puts], self.oprimary)
        self.assertEqual({bytes(c.received) for c in puts}, {body})
        self.assertEqual(len({c.headers["X-Timestamp"] for c in puts}), 1)
        self.assertEqual([c.headers["X-Container-Device"] for c in puts],
                         [n.device_name for n in self.rings.container.get_part_nodes(self.cpart)])

    def test_put_to_a_full_node_uses_a_handoff(self) -> None:
        self.backend.nodes[self.oprimary[1]] = reply(507)
        response = self.call("PUT", {"Content-Length": "4"}, Chunks([b"data"]))
        self.assertEqual(response.status, 201)
        self.assertEqual(sorted(self.backend.asked("PUT")), sorted([*self.oprimary, self.ohandoff[0]]))
        stored = {c.node for c in self.backend.calls if c.method == "PUT" and bytes(c.received) == b"data"}
        self.assertEqual(stored, {self.oprimary[0], self.oprimary[2], self.ohandoff[0]})

    def test_put_without_a_quorum_reads_no_body(self) -> None:
        for node in self.oprimary[:2] + self.ohandoff:
            self.backend.nodes[node] = down
        upload = Chunks([b"data"])
        response = self.call("PUT", {"Content-Length": "4"}, upload)
        self.assertEqual(response.status, 503)
        self.assertEqual((upload.chunks, upload.stopped), ([b"data"], True))

    def test_get_from_the_next_replica_when_one_fails(self) -> None:
        self.backend.nodes[self.oprimary[0]] = reply(503)
        self.backend.default = lambda call: BackendResponse(200, {"etag": "e", "content-length": "5"}, b"hello")
        response = self.call("GET")
        self.assertEqual((response.status, response.headers["Content-Length"], self.read_all(response)), (200, "5", b"hello"))
        self.assertEqual(self.backend.asked("GET")[-2:], self.oprimary[:2])

    def test_get_resumes_a_broken_body_elsewhere(self) -> None:
        body = bytes(range(256)) * 1000
        whole = BackendResponse(200, {"etag": "e"}, body)
        self.backend.default = lambda call: whole
        self.backend.nodes[self.oprimary[0]] = lambda call: Cut(whole, 100_000)

        def ranged(call):
            first = int(call.headers["Range"].removeprefix("bytes=").split("-")[0])
            return BackendResponse(206, {"etag": "e"}, body[first:])

        self.backend.nodes[self.oprimary[1]] = ranged
        response = self.call("GET")
        self.assertEqual(self.read_all(response), body)
        resumed = self.backend.to(self.oprimary[1])[-1]
        self.assertEqual((resumed.headers["Range"], resumed.headers["If-Match"]), (f"bytes=100000-{len(body) - 1}", "e"))

    def test_get_that_no_replica_can_resume_fails(self) -> None:
        whole = BackendResponse(200, {"etag": "e"}, b"z" * 100_000)  # streamed: past WHOLE_BELOW
        self.backend.default = lambda call: Cut(whole, 10) if call.method == "GET" else whole
        response = self.call("GET")
        self.assertEqual(self.successResultOf(response.body.read()), b"z" * 10)
        self.failureResultOf(response.body.read(), ResponseAborted)

    def test_a_small_body_is_answered_whole_or_not_at_all(self) -> None:
        whole = BackendResponse(200, {"etag": "e"}, b"z" * 1000)
        self.backend.nodes[self.oprimary[0]] = lambda call: Cut(whole, 10)
        self.backend.default = lambda call: BackendResponse(206, {"etag": "e"}, b"z" * 990)
        response = self.call("GET")  # resumed from the next replica before anything went out
        self.assertEqual((response.status, response.body), (200, b"z" * 1000))
        self.backend.default = lambda call: Cut(whole, 10) if call.method == "GET" else whole
        response = self.call("GET")  # no replica can: a clear 503, not a broken response
        self.assertEqual(response.status, 503)

    def test_metadata_limits_count_the_bytes_sent(self) -> None:
        def header(chars: int) -> str:  # "é" × chars as the client sends it: UTF-8, seen as Latin-1
            return ("é" * chars).encode("utf-8").decode("latin-1")

        self.assertEqual(self.call("POST", {"X-Object-Meta-A": header(128)}).status, 204)
        posted = [c for c in self.backend.calls if c.method == "POST"][0]
        self.assertEqual(posted.headers["X-Object-Meta-A"].encode("latin-1"), ("é" * 128).encode("utf-8"))
        response = self.call("POST", {"X-Object-Meta-A": header(129)})  # 258 bytes: over 256
        self.assertEqual((response.status, response.body), (400, b"Metadata value longer than 256: X-Object-Meta-A"))

    def test_delete_if_delete_at_and_delete_at_limits(self) -> None:
        """As Swift's proxy: a bad X-If-Delete-At is 400, a far X-Delete-At is stored as 9999999999."""
        self.backend.default = reply(204)
        response = self.call("DELETE", {"X-If-Delete-At": "bad"})
        self.assertEqual((response.status, response.body), (400, b"Bad X-If-Delete-At header value"))
        self.assertEqual([c for c in self.backend.calls if c.method == "DELETE"], [])
        response = self.call("DELETE", {"X-If-Delete-At": "1700000100"})
        self.assertEqual((response.status, response.headers["Content-Type"]), (204, "text/html; charset=UTF-8"))
        deletes = [c for c in self.backend.calls if c.method == "DELETE"]
        self.assertEqual({c.headers.get("X-If-Delete-At") for c in deletes}, {"1700000100"})
        self.backend.default = reply(202)
        for headers in ({"X-Delete-At": "1" * 100}, {"X-Delete-After": str(10**12)}):
            self.backend.calls.clear()
            self.assertEqual(self.call("POST", headers).status, 202)
            posts = [c for c in self.backend.calls if c.method == "POST"]
            self.assertEqual({c.headers["X-Delete-At"] for c in posts}, {"9999999999"}, headers)

    def test_a_content_type_that_is_not_utf8_is_refused(self) -> None:
        """Issue 20: stored, such an object could never be listed or read (every node a 500)."""
        self.backend.default = reply(202)
        for method, value in (("PUT", "text/\xff"), ("POST", "text/\xc3"), ("PUT", "a\x00b")):
            self.backend.calls.clear()
            response = self.call(method, {"Content-Type": value, "Content-Length": "0"}, Chunks([]))
            self.assertEqual((response.status, response.body), (400, b"Invalid Content-Type"), (method, value))
            self.assertEqual([c for c in self.backend.calls if c.method in ("PUT", "POST")], [])
        response = self.call("POST", {"Content-Type": "text/\u00e9\u20ac".encode().decode("latin-1")})
        self.assertEqual(response.status, 202)  # valid UTF-8, as the wire carries it

    def test_head_and_not_found(self) -> None:
        self.backend.default = lambda call: BackendResponse(200, {"etag": "e", "content-length": "1234"}, b"")
        response = self.call("HEAD")
        self.assertEqual((response.status, response.headers["Content-Length"], response.body), (200, "1234", b""))
        self.backend.default = reply(404)
        self.assertEqual(self.call("GET").status, 404)


@frozen
class Received:
    """One request as a fake node saw it; ``body`` grows as the body arrives."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytearray = field(factory=bytearray)
    times: list[float] = field(factory=lambda: [time.monotonic()])  # the head's, then the body's end
    trailers: dict[str, str] = field(factory=dict)  # a chunked body's, names in lower case
    chunk_sizes: list[int] = field(factory=list)  # a chunked body's, as framed


class _NodeProtocol(Protocol):
    def __init__(self, node: FakeObjectNode) -> None:
        self.node = node
        self.buffer = b""
        self.request: Received | None = None
        self.body_left = 0

    def connectionMade(self) -> None:
        self.node.connections.add(self)
        self.node.accepted += 1
        self.served = 0  # requests seen on this connection

    def dataReceived(self, data: bytes) -> None:
        if self.request is None:
            self.served += 1
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.request = Received(method, path, headers)
            self.node.requests.append(self.request)
            self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            self.buffer = b""
            self.body_left = -1 if self.chunked else int(headers.get("content-length", "0"))
            self.node.on_head(self, self.request)
        if self.chunked:
            if self.body_left and data and self.transport.connected:
                self.buffer += data
                self._dechunk()
            return
        if self.body_left and data and self.transport.connected:
            take = data[: self.body_left]
            self.request.body.extend(take)
            self.body_left -= len(take)
            if not self.body_left:
                self.node.on_body(self, self.request)

    def _dechunk(self) -> None:
        """Take the complete chunks buffered; at the last, the trailer fields, then `on_body`."""
        while self.body_left:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            size = int(self.buffer[:end].split(b";")[0], 16)
            if size:
                if len(self.buffer) < end + 2 + size + 2:
                    return
                self.request.chunk_sizes.append(size)
                self.request.body.extend(self.buffer[end + 2 : end + 2 + size])
                self.buffer = self.buffer[end + 4 + size :]
                continue
            last = self.buffer.find(b"\r\n\r\n", end)
            if self.buffer[end:end + 4] == b"\r\n\r\n":
                last = end
            if last < 0:
                return
            for line in self.buffer[end + 2 : last].decode("latin-1").split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    self.request.trailers[name.strip().lower()] = value.strip()
            self.buffer, self.body_left = b"", 0
            self.node.on_body(self, self.request)

    def respond(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        keep = self.node.keep_alive and not self.body_left
        lines = [f"HTTP/1.1 {status} Scripted", f"Content-Length: {len(body)}"]
        lines += [] if keep else ["Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if keep:
            self.request, self.buffer = None, b""  # ready for the next request
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        self.node.connections.discard(self)
        closed, self.node._closed = self.node._closed, []
        for waiter in closed:
            waiter.callback(None)
        waiters, self.node._idle = self.node._idle, []
        if not self.node.connections:
            for waiter in waiters:
                waiter.callback(None)
        else:
            self.node._idle = waiters


class FakeObjectNode(Factory):
    """
    An object server that does as told, recording every request it got.

    PUT modes: ``ok`` (100 Continue, read the body, 201 with its MD5 or ``etag``), an int (that
    status instead of 100 Continue), ``silent`` (no answer at all), ``stall`` (100 Continue,
    then never read), ``close_reused`` (as ``ok`` on a new connection, but a second request on
    a connection closes it unanswered, as a node does that timed an idle connection out just
    then). ``keep_alive``: answers leave the connection open (else ``Connection: close``). GET modes: ``ok`` (200 with ``stored``, or 206 for a Range, 412 for an
    If-Match that does not match), ``half`` (the head and half the body, then close), ``hang``
    (the head and half the body, then nothing), ``held`` (no answer until `answer_held`), an
    int (that status).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.put_mode: str | int = "ok"
        self.get_mode: str | int = "ok"
        self.etag: str | None = None
        self.stored = b""
        self.requests: list[Received] = []
        self.connections: set[_NodeProtocol] = set()
        self._idle: list[Deferred] = []
        self._closed: list[Deferred] = []
        self.held: list[tuple[_NodeProtocol, Received]] = []
        self.port = None
        self.keep_alive = False
        self.accepted = 0  # connections accepted

    def buildProtocol(self, addr) -> _NodeProtocol:
        return _NodeProtocol(self)

    def listen(self) -> int:
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        return self.port.getHost().port

    def small_receive_buffer(self) -> None:
        """Connections accepted from now on buffer little, so that a stall is felt at once."""
        self.port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def refuse(self) -> None:
        """Stop listening: connections are refused from now on."""
        port, self.port = self.port, None
        await port.stopListening()

    def next_close(self) -> Deferred:
        """Fires when one of this node's connections ends."""
        waiter: Deferred = Deferred()
        self._closed.append(waiter)
        return waiter

    def received(self, method: str) -> list[Received]:
        return [r for r in self.requests if r.method == method]

    def on_head(self, proto: _NodeProtocol, request: Received) -> None:
        if request.method == "PUT":
            if isinstance(self.put_mode, int):
                proto.body_left = 0
                proto.respond(self.put_mode, body=b"scripted refusal\n")
                return
            if self.put_mode == "silent":
                return
            if self.put_mode == "close_reused" and proto.served > 1:
                proto.transport.loseConnection()
                return
            proto.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if self.put_mode == "stall":
                proto.transport.pauseProducing()
            return
        mode = self.get_mode
        if mode == "held":
            self.held.append((proto, request))
            return
        if isinstance(mode, int):
            proto.respond(mode, {"X-Backend-Timestamp": "0000000001.00000"})
            return
        body, etag = self.stored, hashlib.md5(self.stored).hexdigest()
        headers = {"ETag": etag, "Content-Type": "text/plain", "X-Backend-Timestamp": "0000000001.00000"}
        if request.headers.get("if-match", etag) != etag:
            proto.respond(412)
            return
        byte_range = request.headers.get("range")
        if byte_range and mode == "ok":
            first, last = (int(v) for v in byte_range.removeprefix("bytes=").split("-"))
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            proto.respond(206, headers, body[first : last + 1] if request.method == "GET" else b"")
            return
        if mode in ("half", "hang"):
            lines = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
            proto.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body[: len(body) // 2])
            if mode == "half":
                proto.transport.loseConnection()
            return
        proto.respond(200, headers, body if request.method == "GET" else b"")

    def answer_held(self, mode: str | int = "ok") -> None:
        self.get_mode = mode
        held, self.held = self.held, []
        for proto, request in held:
            self.on_head(proto, request)

    def on_body(self, proto: _NodeProtocol, request: Received) -> None:
        request.times.append(time.monotonic())
        if request.method == "PUT":
            if self.put_mode == "late_conflict":  # a newer version was stored meanwhile
                proto.respond(409, {"X-Backend-Timestamp": "9999999999.00000"})
                return
            sent = request.trailers.get("x-backend-body-md5"), request.trailers.get("x-backend-body-crc32")
            md5 = hashlib.md5(bytes(request.body)).hexdigest()
            if "x-backend-md5-footer" in request.headers and sent != (md5, f"{zlib.crc32(bytes(request.body)):08x}"):
                proto.respond(422, body=f"trailers {sent} for a body of md5 {md5}\n".encode())
                return
            proto.respond(201, {"ETag": self.etag or md5})

    def close(self) -> Deferred:
        """Drop every connection and stop listening; fires when all is gone."""
        gone: Deferred = Deferred()
        if self.connections:
            self._idle.append(gone)
            for proto in list(self.connections):
                proto.transport.abortConnection()
        else:
            gone.callback(None)
        if self.port is not None:
            return DeferredList([gone, self.port.stopListening()])
        return gone


class _TrackingSite(StreamingSite):
    """A StreamingSite that can drop its open connections (for a clean reactor after a test)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.open: dict[object, Deferred] = {}

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        gone: Deferred = Deferred()
        self.open[protocol] = gone
        lost = protocol.connectionLost

        def connection_lost(reason) -> None:
            lost(reason)
            self.open.pop(protocol, None)
            gone.callback(None)

        protocol.connectionLost = connection_lost
        return protocol

    def close_all(self) -> Deferred:
        waiting = list(self.open.values())
        for protocol in list(self.open):
            protocol.transport.abortConnection()
        return DeferredList(waiting)


class _ObjectsOverLoopback:
    """Account and container requests in memory; object GETs and PUTs to the scripted nodes."""

    def __init__(self, fake: FakeBackend, real: BackendClient) -> None:
        self.request = fake.request
        self.stream = real.stream
        self.put = real.put


class ObjectPathTests(TestCase):
    """The real ProxyServer on 127.0.0.1, six scripted object nodes, treq as the client."""

    timeout = 15
    node_timeout = 0.5

    async def setUp(self) -> None:
        self.nodes = [FakeObjectNode(f"sd{i}") for i in range(1, 7)]
        for node in self.nodes:
            self.addCleanup(node.close)
        ports = [node.listen() for node in self.nodes]
        directory = temp_dir(self)
        objects = build_ring(directory / "object.ring.gz", ["127.0.0.1"] * 6, ports)
        self.rings = fake_rings(directory, objects)
        part = objects.get_part(ACCOUNT, "c", "o")
        by_port = {node.port.getHost().port: node for node in self.nodes}
        self.primary = [by_port[n.port] for n in objects.get_part_nodes(part)]
        self.handoff = [by_port[n.port] for n in objects.get_more_nodes(part)]
        self.assertEqual((len(self.primary), len(self.handoff)), (3, 3))
        containers = self.rings.container
        cpart = containers.get_part(ACCOUNT, "c")
        self.container_headers = [
            {"x-container-host": f"{n.ip}:{n.port}", "x-container-device": n.device_name,
             "x-container-partition": str(cpart)}
            for n in containers.get_part_nodes(cpart)
        ]
        self.backend = FakeBackend()  # the account and container servers
        real = BackendClient(reactor, max_per_host=32)  # the object nodes, over loopback
        self.addCleanup(real.close)
        self.put_pool = real.puts
        context = ProxyContext(
            reactor=reactor, rings=self.rings, policies=DEFAULT_POLICIES, client=_ObjectsOverLoopback(self.backend, real),
            cache=InMemoryInfoCache(time.time), node_timeout=self.node_timeout,
            errors=ErrorLimiter(time.time),
        )
        stages = stages_from({"tempauth": {"user_test_tester": "testing .admin"}})
        site = _TrackingSite(ProxyServer(context, stages).resource())
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(site.close_all)
        self.site = site
        self.proxy_port = listening.getHost().port
        self.url = f"http://127.0.0.1:{self.proxy_port}/v1/{ACCOUNT}/c/o"
        client_pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = treq.client.HTTPClient(Agent(reactor, pool=client_pool))
        self.addCleanup(client_pool.closeCachedConnections)
        login = await self.client.get(f"http://127.0.0.1:{self.proxy_port}/auth/v1.0",
                                      headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"})
        await login.content()
        self.token = login.headers.getRawHeaders(b"x-auth-token")[0].decode()

    def auth(self, **headers: str) -> dict[str, str]:
        return {"X-Auth-Token": self.token, **{k.replace("_", "-"): v for k, v in headers.items()}}

    async def raw(self, request: bytes, hang_up_after: int | None = None) -> bytes:
        """Send ``request`` as is; what came back by the time the proxy closed the connection."""
        client = RawClient(request, hang_up_after)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        return await client.done

    def no_unhandled_errors(self) -> None:
        """Deferreds dropped with a failure in them are logged (and fail the test) now, not later."""
        gc.collect()

    def stored_on(self, nodes: list[FakeObjectNode], body: bytes, index: list[int]) -> None:
        """Each node got one PUT of the whole ``body``, with the container headers of its slot."""
        stamps = set()
        for node, slot in zip(nodes, index):
            puts = node.received("PUT")
            self.assertEqual(len(puts), 1, node.name)
            self.assertEqual(bytes(puts[0].body), body, node.name)
            self.assertEqual({k: puts[0].headers[k] for k in self.container_headers[slot]},
                             self.container_headers[slot])
            self.assertEqual(puts[0].headers["expect"], "100-continue")
            stamps.add(puts[0].headers["x-timestamp"])
        self.assertEqual(len(stamps), 1)

    # --- PUT -----------------------------------------------------------------------------

    async def test_put_to_three_nodes(self) -> None:
        body = b"x" * 100_000
        response = await self.client.put(self.url, body, headers=self.auth(Content_Type="text/plain"))
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders(b"etag"), [hashlib.md5(body).hexdigest().encode()])
        await response.content()
        self.stored_on(self.primary, body, [0, 1, 2])
        self.assertEqual([n.requests for n in self.handoff], [[], [], []])

    async def test_put_sends_the_body_md5_and_crc32_after_the_body(self) -> None:
        """For a large body the nodes need not compute the md5: the proxy's follows it (body_digest)."""
        self.patch(obj_put, "PROXY_MD5_MIN", 140_000)
        small, body = b"small" * 1000, b"digest " * 20_000
        for data in (small, body):
            response = await self.client.put(self.url, data, headers=self.auth(Content_Type="text/plain"))
            self.assertEqual(response.code, 201)
            await response.content()
        for node in self.primary:
            put_small, put = node.received("PUT")
            self.assertEqual((put_small.headers["content-length"], put_small.trailers), (str(len(small)), {}))
            self.assertNotIn("x-backend-md5-footer", put_small.headers)
            self.assertEqual(
                (put.headers["transfer-encoding"], put.headers["x-backend-md5-footer"],
                 put.headers["x-backend-obj-content-length"], "content-length" in put.headers),
                ("chunked", "crc32", str(len(body)), False),
            )
            self.assertEqual(put.chunk_sizes, [len(body)])  # one chunk, written as it came
            self.assertEqual(bytes(put.body), body)
            self.assertEqual(put.trailers, {"x-backend-body-md5": hashlib.md5(body).hexdigest(),
                                            "x-backend-body-crc32": f"{zlib.crc32(body):08x}"})

    async def test_a_chunked_put_sends_the_body_md5_and_crc32_as_trailers(self) -> None:
        """A body of unknown length may be large: its md5 is the proxy's too."""
        body = [b"chunk of unknown length " * 1000] * 5
        response = await self.client.put(self.url, ChunkedBody(body), headers=self.auth(Content_Type="text/plain"))
        self.assertEqual(response.code, 201)
        await response.content()
        whole = b"".join(body)
        for node in self.primary:
            (put,) = node.received("PUT")
            self.assertEqual((put.headers["transfer-encoding"], put.headers["x-backend-md5-footer"]), ("chunked", "crc32"))
            self.assertNotIn("x-backend-obj-content-length", put.headers)
            self.assertEqual(bytes(put.body), whole)
            self.assertEqual(put.trailers, {"x-backend-body-md5": hashlib.md5(whole).hexdigest(),
                                            "x-backend-body-crc32": f"{zlib.crc32(whole):08x}"})

    async def test_put_with_a_refused_primary_uses_a_handoff(self) -> None:
        await self.primary[0].refuse()
        body = b"refused " * 1000
        response = await self.client.put(self.url, body, headers=self.auth())
        self.assertEqual(response.code, 201)
        await response.content()
        self.stored_on([self.handoff[0], self.primary[1], self.primary[2]], body, [0, 1, 2])
        self.assertEqual([n.requests for n in self.handoff[1:]], [[], []])

    async def test_put_to_a_full_node_uses_a_handoff(self) -> None:
        self.primary[1].put_mode = 507
        body = b"full " * 1000
        response = await self.client.put(self.url, body, headers=self.auth())
        self.assertEqual(response.code, 201)
        await response.content()
        self.stored_on([self.primary[0], self.handoff[0], self.primary[2]], body, [0, 1, 2])
        (refused,) = self.primary[1].received("PUT")
        self.assertEqual(bytes(refused.body), b"")  # asked, never sent the body
        self.assertEqual(self.handoff[0].received("PUT")[0].headers["x-timestamp"], refused.headers["x-timestamp"])

    async def test_put_to_a_node_that_never_invites_the_body_uses_a_handoff(self) -> None:
        self.primary[2].put_mode = "silent"
        body = b"silence " * 1000
        started = time.monotonic()
        response = await self.client.put(self.url, body, headers=self.auth())
        self.assertEqual(response.code, 201)
        self.assertGreaterEqual(time.monotonic() - started, self.node_timeout)
        await response.content()
        self.stored_on([self.primary[0], self.primary[1], self.handoff[0]], body, [0, 1, 2])
        self.assertEqual(bytes(self.primary[2].received("PUT")[0].body), b"")
        self.no_unhandled_errors()

    async def test_a_node_that_timed_out_is_skipped_at_once(self) -> None:
        """One timeout error-limits the node: the next PUT does not wait for it again."""
        self.primary[2].put_mode = "silent"
        response = await self.client.put(self.url, b"first " * 1000, headers=self.auth())
        self.assertEqual(response.code, 201)
        await response.content()
        started = time.monotonic()
        response = await self.client.put(self.url, b"second " * 1000, headers=self.auth())
        self.assertEqual(response.code, 201)
        await response.content()
        self.assertLess(time.monotonic() - started, self.node_timeout)
        self.assertEqual(len(self.primary[2].received("PUT")), 1)  # not asked the second time
        self.assertEqual(len(self.handoff[0].received("PUT")), 2)
        self.no_unhandled_errors()

    async def test_put_without_enough_nodes_does_not_read_the_body(self) -> None:
        for node in [self.primary[0], self.primary[2], *self.handoff]:
            await node.refuse()
        got = await self.raw(
            f"PUT /v1/{ACCOUNT}/c/o HTTP/1.1\r\nHost: proxy\r\nX-Auth-Token: {self.token}\r\n"
            "Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        self.assertTrue(got.startswith(b"HTTP/1.1 503 "), got)  # no 100 Continue first
        self.assertIn(b"not enough storage nodes", got)
        (put,) = self.primary[1].requests
        self.assertEqual(bytes(put.body), b"")
        self.no_unhandled_errors()

    async def test_put_answered_with_different_etags(self) -> None:
        for node, etag in zip(self.primary, ("aaaa", "bbbb", "cccc")):
            node.etag = etag
        response = await self.client.put(self.url, b"body", headers=self.auth())
        self.assertEqual(response.code, 503)
        self.assertIsNone(response.headers.getRawHeaders(b"etag"))
        await response.content()
        self.primary[2].etag = "aaaa"
        response = await self.client.put(self.url, b"body", headers=self.auth())
        self.assertEqual((response.code, response.headers.getRawHeaders(b"etag")), (201, [b"aaaa"]))
        await response.content()

    async def test_put_drops_a_node_that_stops_reading(self) -> None:
        stalled = self.primary[2]
        stalled.small_receive_buffer()
        stalled.put_mode = "stall"
        body = b"s" * (8 * 1024 * 1024)
        response = await self.client.put(self.url, body, headers=self.auth())
        self.assertEqual((response.code, response.headers.getRawHeaders(b"etag")),
                         (201, [hashlib.md5(body).hexdigest().encode()]))
        await response.content()
        self.stored_on(self.primary[:2], body, [0, 1])
        (put,) = stalled.received("PUT")
        self.assertLess(len(put.body), len(body) // 2)
        # The others waited for it mid-body, for node_timeout, and no longer.
        started, finished = self.primary[0].received("PUT")[0].times
        self.assertGreaterEqual(finished - started, self.node_timeout)
        self.assertEqual([n.requests for n in self.handoff], [[], [], []])
        self.no_unhandled_errors()

    async def test_puts_reuse_node_connections(self) -> None:
        for node in self.nodes:
            node.keep_alive = True
        for body in (b"first" * 100, b"second" * 100):
            response = await self.client.put(self.url, body, headers=self.auth())
            self.assertEqual(response.code, 201)
            await response.content()
        self.assertEqual([n.accepted for n in self.primary], [1, 1, 1])
        self.assertEqual([len(n.received("PUT")) for n in self.primary], [2, 2, 2])
        self.assertEqual(self.put_pool.connects, 3)

    async def test_an_early_answer_closes_the_connection(self) -> None:
        for node in self.nodes:
            node.keep_alive = True
        self.primary[0].put_mode = 507
        for _ in range(2):
            response = await self.client.put(self.url, b"body", headers=self.auth())
            self.assertEqual(response.code, 201)
            await response.content()
        # A 507 before the body: a new connection (and a handoff) each time.
        self.assertEqual(self.primary[0].accepted, 2)
        self.assertEqual([n.accepted for n in self.primary[1:]], [1, 1])
        self.assertEqual(len(self.handoff[0].received("PUT")), 2)

    async def test_a_pooled_connection_the_node_closed_is_retried_on_a_new_one(self) -> None:
        for node in self.nodes:
            node.keep_alive = True
        self.primary[1].put_mode = "close_reused"
        for body in (b"one" * 10, b"two" * 10):
            response = await self.client.put(self.url, body, headers=self.auth())
            self.assertEqual(response.code, 201)
            await response.content()
        self.assertEqual(self.primary[1].accepted, 2)
        self.assertEqual([bytes(put.body) for put in self.primary[1].received("PUT")], [b"one" * 10, b"", b"two" * 10])
        self.assertEqual([n.requests for n in self.handoff], [[], [], []])  # no handoff was needed
        self.no_unhandled_errors()

    async def test_put_older_than_a_stored_version_is_accepted_and_sends_nothing(self) -> None:
        """A node holding a newer version answers 409: Swift's 202, and no body goes anywhere."""
        self.primary[1].put_mode = 409
        got = await self.raw(
            f"PUT /v1/{ACCOUNT}/c/o HTTP/1.1\r\nHost: proxy\r\nX-Auth-Token: {self.token}\r\n"
            "Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        self.assertTrue(got.startswith(b"HTTP/1.1 202 "), got)
        for node in self.primary:
            self.assertEqual([bytes(put.body) for put in node.received("PUT")], [b""])
        self.assertEqual([n.requests for n in self.handoff], [[], [], []])

    async def test_put_overtaken_while_its_body_streamed_is_accepted(self) -> None:
        for node in self.primary[:2]:
            node.put_mode = "late_conflict"
        response = await self.client.put(self.url, b"late " * 1000, headers=self.auth())
        self.assertEqual(response.code, 202)
        self.assertIn(b"newer version", await response.content())

    async def test_put_if_none_match_refused_by_the_nodes(self) -> None:
        for node in self.primary:
            node.put_mode = 412
        got = await self.raw(
            f"PUT /v1/{ACCOUNT}/c/o HTTP/1.1\r\nHost: proxy\r\nX-Auth-Token: {self.token}\r\n"
            "Content-Length: 5000\r\nExpect: 100-continue\r\nIf-None-Match: *\r\n\r\n".encode()
        )
        self.assertTrue(got.startswith(b"HTTP/1.1 412 "), got)
        for node in self.primary:
            (put,) = node.requests
            self.assertEqual((put.headers["if-none-match"], bytes(put.body)), ("*", b""))
        self.assertEqual([n.requests for n in self.handoff], [[], [], []])  # a real answer: no handoff

    # --- GET -----------------------------------------------------------------------------

    def store(self, body: bytes) -> None:
        for node in self.nodes:
            node.stored = body

    async def test_get_from_the_second_when_the_first_refuses(self) -> None:
        body = b"the object " * 5000
        self.store(body)
        await self.primary[0].refuse()
        response = await self.client.get(self.url, headers=self.auth())
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), body)
        self.assertEqual(response.headers.getRawHeaders(b"etag"), [hashlib.md5(body).hexdigest().encode()])
        self.assertFalse(response.headers.hasHeader(b"x-backend-timestamp"))
        self.assertEqual(len(self.primary[1].received("GET")), 1)
        self.assertEqual(self.primary[2].requests, [])

    async def test_a_read_asks_the_object_nodes_when_the_container_is_not_found(self) -> None:
        """As Swift's proxy: the container's replicas may lack its database yet; its objects are there."""
        body = b"still here"
        self.store(body)

        def no_container(call: Call):
            if call.path.count("/") == 4:  # /<dev>/<part>/<account>/<container>
                return BackendResponse(404, {}, b"")
            return usual(call)
        self.backend.default = no_container
        response = await self.client.get(self.url, headers=self.auth())
        self.assertEqual((response.code, await response.content()), (200, body))
        response = await self.client.head(self.url, headers=self.auth())
        self.assertEqual(response.code, 200)
        await response.content()
        # A write needs the container.
        response = await self.client.put(self.url, b"x", headers=self.auth(Content_Type="text/plain"))
        self.assertEqual((response.code, await response.content()), (404, b"Not Found: no such container"))

    async def test_get_resumes_from_another_replica(self) -> None:
        body = bytes(range(256)) * 1000
        self.store(body)
        self.primary[0].get_mode = "half"
        response = await self.client.get(self.url, headers=self.auth())
        self.assertEqual((response.code, response.length), (200, len(body)))
        self.assertEqual(await response.content(), body)
        (resumed,) = self.primary[1].received("GET")
        self.assertEqual((resumed.headers["range"], resumed.headers["if-match"]),
                         (f"bytes={len(body) // 2}-{len(body) - 1}", hashlib.md5(body).hexdigest()))
        self.assertEqual(self.primary[2].requests, [])

    async def test_get_from_a_node_that_stalls_resumes_elsewhere(self) -> None:
        body = bytes(range(256)) * 1000
        self.store(body)
        self.primary[0].get_mode = "hang"  # half the body, then silence with the socket open
        response = await self.client.get(self.url, headers=self.auth())
        self.assertEqual(await response.content(), body)
        (resumed,) = self.primary[1].received("GET")
        self.assertEqual(resumed.headers["range"], f"bytes={len(body) // 2}-{len(body) - 1}")

    async def test_a_small_body_from_a_node_that_stalls_is_resumed_elsewhere(self) -> None:
        body = bytes(range(256)) * 100  # read whole before the answer (one wait for its end)
        self.store(body)
        self.primary[0].get_mode = "hang"
        response = await self.client.get(self.url, headers=self.auth())
        self.assertEqual((response.code, response.length), (200, len(body)))
        self.assertEqual(await response.content(), body)
        (resumed,) = self.primary[1].received("GET")
        self.assertEqual(resumed.headers["range"], f"bytes={len(body) // 2}-{len(body) - 1}")

    async def test_get_that_no_replica_can_resume_is_aborted(self) -> None:
        body = b"0123456789" * 10_000
        self.store(body)
        self.primary[0].get_mode = "half"
        for node in [*self.primary[1:], *self.handoff]:
            node.get_mode = 404
        response = await self.client.get(self.url, headers=self.auth())
        self.assertEqual(response.code, 200)
        got: list[bytes] = []
        failure = await self.assertFailure(treq.collect(response, got.append), ResponseFailed)
        self.assertEqual(b"".join(got), body[: len(body) // 2])
        self.assertIsNotNone(failure)
        for node in [*self.primary[1:], *self.handoff]:
            (asked,) = node.received("GET")
            self.assertEqual(asked.headers["range"], f"bytes={len(body) // 2}-{len(body) - 1}")


    async def test_get_for_a_client_that_went_away(self) -> None:
        body = b"abcdefgh" * 100_000
        self.store(body)
        self.primary[0].get_mode = "hang"  # half the body, then nothing: the client hangs up
        node_closed = self.primary[0].next_close()
        got = await self.raw(
            f"GET /v1/{ACCOUNT}/c/o HTTP/1.1\r\nHost: proxy\r\nX-Auth-Token: {self.token}\r\n\r\n".encode(),
            hang_up_after=len(body) // 4,
        )
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "))
        await node_closed  # the proxy stopped reading from the node
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual([n.requests for n in [*self.primary[1:], *self.handoff]], [[]] * 5)  # no resume

    async def test_get_for_a_client_that_went_away_before_the_node_answered(self) -> None:
        body = b"late" * 100_000
        self.store(body)
        self.primary[0].get_mode = "held"
        client = RawClient(f"GET /v1/{ACCOUNT}/c/o HTTP/1.1\r\nHost: proxy\r\nX-Auth-Token: {self.token}\r\n\r\n"
                            .encode())
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), client)
        while not self.primary[0].held:
            await deferLater(reactor, 0.01, lambda: None)
        client.transport.abortConnection()
        await client.done
        await self.site.close_all()  # the proxy has seen the client go
        node_closed = self.primary[0].next_close()
        node_closed.addTimeout(2, reactor)
        self.primary[0].answer_held("hang")  # half the body, then it waits to be read
        await node_closed  # the proxy hung up on the node instead of buffering its body
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual([n.requests for n in [*self.primary[1:], *self.handoff]], [[]] * 5)
