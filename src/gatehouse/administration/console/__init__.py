"""The administration web console at ``/console/`` on the Administration service's listener:
server-rendered pages (Starlette + Jinja2), no build step, no third-party code; every page a
:class:`~.app.ConsoleRoute` with the permission it needs (:mod:`..admins_roles`)."""
