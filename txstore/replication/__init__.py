"""
The replication protocol between storage nodes: frames and records (pure), the session state
machine (pure), and the Twisted protocols of the sender and the receiver.

See docs/replication.rst for the specification.
"""
