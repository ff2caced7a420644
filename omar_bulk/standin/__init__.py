"""A stand-in OMAR-Online for demos, tests and users' own pipelines: loopback, TLS, faults.

It is not CAISO's server; it behaves as the download specification says the real one does
(client certificate required, exact query parameters, session cookie, MDEF or CSV bodies) and
can misbehave on purpose (latency, 5xx, cut bodies, login pages, expired sessions).
"""

__all__: list[str] = []
