"""
The S3 API as a second protocol over the same accounts, containers and objects (issue 17).

`txstore.s3.middleware` is the ``s3api`` filter of the proxy pipeline: it recognises a request
signed the S3 way, checks the signature (`sigv4`, `sigv2`) against a credential source
(`credentials`: tempauth's users by default), and answers it with Swift sub-requests sent down
the pipeline below it (`service`, `bucket`, `obj`), errors and listings as S3's XML
(`errors`, `xml`). ``docs/s3.rst`` says what is built and what is refused.
"""
