"""Internal trust: who a peer on the internal network is (its certificate from the
installation's internal CA), and the TLS contexts every internal link uses."""
