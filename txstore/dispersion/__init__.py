"""
``txstore-dispersion``: how many copies of a sample of containers and objects are where the
rings say they belong (as Swift's ``swift-dispersion-populate`` / ``swift-dispersion-report``).

`names` chooses one name per partition, `tally` does the report's arithmetic and wording,
`settings` reads ``[dispersion]``, `proxy_session` talks to the proxy (tempauth, PUTs,
listings), `copies` asks each primary node directly, `cli` ties them into the command.
docs/dispersion.rst has the whole story.
"""
