"""
The fast tier: tests in memory (Clock, MemoryReactor, StringTransport, StubTreq), on
local temporary files, or on loopback listeners of trial's own reactor; no servers in other
processes. ``trial txstore.test.unit`` runs them in under a minute.
"""
