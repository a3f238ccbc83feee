"""Internal TLS servers send no session tickets: no internal client resumes a session, and
making the tickets was a third of a server's CPU for each handshake."""

from __future__ import annotations

import ssl

import pytest

from gatehouse.trust.identity import ACCESS_POINT, ADMINISTRATION, POLICY

from .conftest import MakeCredentials


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A full handshake in memory; the client's side after it has read all the server sent."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname="127.0.0.1")
    done: set[str] = set()
    for _ in range(10):
        for name, side in (("client", c), ("server", s)):
            if name not in done:
                try:
                    side.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert done == {"client", "server"}
    with pytest.raises(ssl.SSLWantReadError):
        c.read(1024)  # takes in whatever came after the handshake (tickets, if any)
    return c


@pytest.mark.parametrize("optional", [False, True], ids=["mutual", "optional-client-cert"])
def test_internal_servers_issue_no_session_ticket(
    make_credentials: MakeCredentials, optional: bool
) -> None:
    server_creds = make_credentials(ADMINISTRATION if optional else POLICY, "s1")
    server = server_creds.optional_client_server_context() if optional else server_creds.server
    client = make_credentials(ACCESS_POINT, "ap1").client
    assert server.num_tickets == 0
    c = _handshake(server, client)
    assert c.version() == "TLSv1.3"
    assert c.session is None or not c.session.has_ticket

    # The check above can see a ticket: the same handshake with OpenSSL's default has one.
    server.num_tickets = 2
    c = _handshake(server, client)
    assert c.session is not None
    assert c.session.has_ticket
