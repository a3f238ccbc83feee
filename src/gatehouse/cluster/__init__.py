"""A high-availability installation described by one topology file.

:mod:`.topology` is the file's model (nodes, services placed on them, the load balancer, the
databases); :mod:`.installation` turns it into the Administration service's installation
configuration; :mod:`.haproxy` writes the load balancer's configuration.
"""
