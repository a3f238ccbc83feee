"""The Access Point: the policy enforcement point, a reverse proxy in the DMZ.

Modules: ``routing`` (resource matching), ``request`` (request-head validation and path
normalisation), ``headers`` (proxy header rewriting), ``pages`` (error pages), ``upstream``
(backend connection pools), ``connection`` (the client-side protocol), ``server`` (worker
process, signals, reload) and ``supervisor`` (several workers on one port).
"""
