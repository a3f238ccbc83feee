"""A high-availability installation described by one topology file.

:mod:`.topology` is the file's model (nodes, services placed on them, the load balancer, the
databases), :mod:`.topology_checks` its cross-field checks; :mod:`.installation` turns it into
the Administration service's installation configuration; :mod:`.haproxy` writes the load
balancer's configuration. :mod:`.runner` runs a topology on this machine (``gatehouse
cluster``) with :mod:`.members`, :mod:`.home`, :mod:`.preflight`, :mod:`.commands`,
:mod:`.bootstrap`, :mod:`.processes`, :mod:`.databases` and :mod:`.status`.
"""
