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
