"""Internal calls between services: the failover client, wire errors, service hosting."""
