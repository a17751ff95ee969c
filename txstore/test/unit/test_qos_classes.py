"""
IO classes from ``txstore.conf`` (`txstore.qos.classes`, read by `load_cluster_config`): the two
classes of a file with no ``[io-class:…]`` section, one default among several (a lone class is
it; two, or none among several, are refused), ``background`` added when missing, bad values
refused with the file, section and option named; a class resolved and a stream's cap; and an
`IOSpec` carried to a node as ``X-Backend-Io-*`` headers and read back (`txstore.qos.headers`).
"""

from __future__ import annotations

import textwrap

from twisted.trial.unittest import SynchronousTestCase

from txstore.common.cluster import load_cluster_config
from txstore.common.config import ConfigError
from txstore.qos.classes import DEFAULT_CLASSES, IOClass, IOClasses, IOSpec
from txstore.qos.headers import ENVIRON, backend_headers, from_backend
from txstore.test.support import temp_dir, write_file

HASH = "[txstore-hash]\nhash_path_suffix = s\n"


class LoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)

    def classes(self, text: str) -> IOClasses:
        return load_cluster_config(write_file(self.dir, "txstore.conf", HASH + textwrap.dedent(text))).io_classes

    def refused(self, text: str) -> str:
        err = self.assertRaises(ConfigError, self.classes, text)
        message = str(err)
        self.assertTrue(message.startswith(str(self.dir / "txstore.conf")), message)
        return message

    def summary(self, classes: IOClasses) -> tuple[str, dict[str, tuple[float, int, int]]]:
        return classes.default_name, {c.name: (c.weight, c.stream_rate, c.tenant_rate) for c in classes}

    def test_no_section_gives_standard_and_background(self) -> None:
        classes = self.classes("")
        self.assertEqual(self.summary(classes), ("standard", {"standard": (1.0, 0, 0), "background": (1.0, 0, 0)}))
        self.assertEqual(classes, DEFAULT_CLASSES)
        self.assertEqual(classes.default, IOClass("standard"))

    def test_several_classes_with_one_default(self) -> None:
        classes = self.classes(
            """
            [io-class:gold]
            weight = 8
            stream_rate = 20MB
            tenant_rate = 1GiB
            [io-class:silver]
            weight = 2.5
            default = yes
            [io-class:background]
            weight = 0.5
            stream_rate = 64KiB
            """
        )
        self.assertEqual(self.summary(classes), ("silver", {
            "gold": (8.0, 20_000_000, 2**30), "silver": (2.5, 0, 0), "background": (0.5, 65536, 0)}))
        self.assertEqual(classes.info(), {"default": "silver", "classes": {
            "gold": {"weight": 8.0, "stream_rate": 20_000_000, "tenant_rate": 2**30},
            "silver": {"weight": 2.5, "stream_rate": 0, "tenant_rate": 0},
            "background": {"weight": 0.5, "stream_rate": 65536, "tenant_rate": 0}}})

    def test_a_lone_class_is_the_default(self) -> None:
        classes = self.classes("[io-class:only]\nweight = 3\n")
        self.assertEqual(self.summary(classes), ("only", {"only": (3.0, 0, 0), "background": (1.0, 0, 0)}))
        # background beside it does not count as a second candidate
        classes = self.classes("[io-class:background]\nweight = 0.1\n[io-class:only]\n")
        self.assertEqual(self.summary(classes), ("only", {"background": (0.1, 0, 0), "only": (1.0, 0, 0)}))

    def test_background_is_added_when_missing(self) -> None:
        classes = self.classes("[io-class:gold]\nweight = 4\n[io-class:bronze]\ndefault = true\n")
        self.assertEqual(classes.get("background"), IOClass("background"))
        self.assertEqual(sorted(c.name for c in classes), ["background", "bronze", "gold"])
        self.assertEqual(classes.default_name, "bronze")

    def test_two_defaults_are_refused(self) -> None:
        message = self.refused("[io-class:a]\ndefault = yes\n[io-class:b]\ndefault = on\n[io-class:c]\n")
        self.assertIn("[io-class]", message)
        self.assertIn("only one IO class may be the default, not a, b", message)

    def test_no_default_among_several_is_refused(self) -> None:
        message = self.refused("[io-class:a]\nweight = 2\n[io-class:b]\n")
        self.assertIn("set default = yes on the IO class of accounts given none", message)
        message = self.refused("[io-class:a]\n[io-class:b]\n[io-class:background]\n")
        self.assertIn("set default = yes", message)

    def test_bad_values_name_the_section_and_option(self) -> None:
        cases = [
            ("[io-class:gold]\nweight = heavy\n", "[io-class:gold]: weight: 'heavy' is not a number"),
            ("[io-class:gold]\nweight = 0\n", "[io-class:gold]: weight: 0 is below the minimum 0.01"),
            ("[io-class:gold]\nweight = 5000\n", "[io-class:gold]: weight: 5000 is above the maximum 1000"),
            ("[io-class:gold]\nweight = nan\n", "[io-class:gold]: weight: 'nan' is not a finite number"),
            ("[io-class:gold]\nstream_rate = fast\n", "[io-class:gold]: stream_rate: 'fast' is not a size"),
            ("[io-class:gold]\ntenant_rate = -1MB\n", "[io-class:gold]: tenant_rate: '-1MB' is not a size"),
            ("[io-class:gold]\ndefault = maybe\n", "[io-class:gold]: default: 'maybe' is not a boolean"),
            ("[io-class:gold]\nshare = 3\n", "[io-class:gold]: share: unknown option"),
            ("[io-class:no good]\n", "[io-class:no good]: unknown section"),
        ]
        for text, words in cases:
            self.assertIn(words, self.refused(text), text)


class UseTests(SynchronousTestCase):
    classes = IOClasses({"gold": IOClass("gold", 4.0, stream_rate=1000),
                         "bronze": IOClass("bronze", 1.0),
                         "background": IOClass("background", 0.5, stream_rate=300)}, "bronze")

    def test_resolve(self) -> None:
        self.assertEqual(self.classes.resolve("gold").name, "gold")
        for name in (None, "", "platinum", "GOLD"):
            self.assertEqual(self.classes.resolve(name).name, "bronze", name)

    def test_stream_cap_is_the_tighter(self) -> None:
        cap = self.classes.stream_cap
        self.assertEqual(cap(IOSpec("gold")), 1000)
        self.assertEqual(cap(IOSpec("gold", "AUTH_a", 400)), 400)
        self.assertEqual(cap(IOSpec("gold", "AUTH_a", 5000)), 1000)
        self.assertEqual(cap(IOSpec("bronze")), 0)  # no cap at all
        self.assertEqual(cap(IOSpec("bronze", "AUTH_a", 70)), 70)
        self.assertEqual(cap(IOSpec("unknown", "AUTH_a")), 0)  # the default's: bronze, none
        self.assertEqual(cap(IOSpec("background", "", 600)), 300)

    def test_a_default_or_background_missing_is_refused(self) -> None:
        self.assertRaises(ValueError, IOClasses, {"a": IOClass("a"), "background": IOClass("background")}, "b")
        self.assertRaises(ValueError, IOClasses, {"standard": IOClass("standard")})


class HeaderTests(SynchronousTestCase):
    def round_trip(self, spec: IOSpec | None) -> tuple[dict[str, str], IOSpec | None]:
        sent = backend_headers({} if spec is None else {ENVIRON: spec})
        lowered = {k.lower(): v for k, v in sent.items()}
        return sent, from_backend(lambda name: lowered.get(name.lower()))

    def test_round_trip(self) -> None:
        sent, back = self.round_trip(IOSpec("gold", "AUTH_test", 2_000_000))
        self.assertEqual(sent, {"X-Backend-Io-Class": "gold", "X-Backend-Io-Tenant": "AUTH_test",
                                "X-Backend-Io-Rate": "2000000"})
        self.assertEqual(back, IOSpec("gold", "AUTH_test", 2_000_000))
        sent, back = self.round_trip(IOSpec("bronze", "AUTH_x"))
        self.assertEqual(sent, {"X-Backend-Io-Class": "bronze", "X-Backend-Io-Tenant": "AUTH_x"})
        self.assertEqual(back, IOSpec("bronze", "AUTH_x", 0))

    def test_no_spec_no_headers(self) -> None:
        self.assertEqual(self.round_trip(None), ({}, None))
        self.assertEqual(backend_headers({"other": 1}), {})

    def test_what_a_node_makes_of_odd_headers(self) -> None:
        def read(**headers: str) -> IOSpec | None:
            named = {"class": "X-Backend-Io-Class", "tenant": "X-Backend-Io-Tenant", "rate": "X-Backend-Io-Rate"}
            return from_backend({named[k]: v for k, v in headers.items()}.get)

        self.assertIsNone(read(tenant="AUTH_a", rate="5"))
        self.assertIsNone(read(**{"class": ""}))
        self.assertIsNone(read(**{"class": "  "}))
        self.assertEqual(read(**{"class": " gold "}, tenant=" AUTH_a "), IOSpec("gold", "AUTH_a", 0))
        for rate in ("fast", "-5", "1.5", "", "\u00b2", "\u00b9\u00b2"):
            self.assertEqual(read(**{"class": "gold"}, rate=rate), IOSpec("gold", "", 0), repr(rate))
        self.assertEqual(read(**{"class": "gold"}, rate=" 42 "), IOSpec("gold", "", 42))
