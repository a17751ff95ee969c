"""
The names an erasure-coded object's requests and metadata carry, in one place for the proxy,
the object server and the reconstructor (docs/backend-api.rst).
"""

# In every archive's metadata (sysmeta: stored with it, never shown to clients).
FRAG_INDEX = "X-Object-Sysmeta-Ec-Frag-Index"  # the archive's index (0 to k+m-1)
EC_ETAG = "X-Object-Sysmeta-Ec-Etag"  # the whole object's
EC_CONTENT_LENGTH = "X-Object-Sysmeta-Ec-Content-Length"  # the whole object's
EC_SEGMENT_SIZE = "X-Object-Sysmeta-Ec-Segment-Size"  # what the object was cut into
EC_SCHEME = "X-Object-Sysmeta-Ec-Scheme"  # "<ec_type> <k>+<m>", for operators

# Backend requests only.
BACKEND_FRAG_INDEX = "X-Backend-Fragment-Index"  # the archive a GET asks for / a durable POST marks
EC_DURABLE = "X-Backend-Ec-Durable"  # a POST: mark the PUT at this timestamp durable

# An EC PUT made durable on its own connection (docs/backend-api.rst, "EC PUT, one request"):
# the proxy asks with EC_COMMIT and says how long the archive is; a node that does it says so on
# its 100 Continue, takes the archive, then a line of footer fields (JSON), stores the archive,
# sends a second 100 Continue, and marks it durable if the next line is COMMIT_LINE.
EC_COMMIT = "X-Backend-Ec-Commit"  # PUT (and the node's 100 Continue): COMMIT_ON_CONNECTION
COMMIT_ON_CONNECTION = "on-connection"
EC_ARCHIVE_LENGTH = "X-Backend-Ec-Archive-Length"  # PUT with EC_COMMIT: the archive's bytes
EC_COMMITTED = "X-Backend-Ec-Committed"  # the PUT's answer: "yes" once the archive is durable
COMMIT_LINE = b"commit\n"
