"""txstore: a distributed object store on Twisted that speaks the OpenStack Swift API."""

__version__ = "0.1.0"
