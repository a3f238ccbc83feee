"""The ``access_point.tls`` model: every refusal names the field path."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError

CERT = {"cert_file": "/etc/gatehouse/tls/ap.crt", "key_file": "/etc/gatehouse/tls/ap.key"}


def tls(**fields: Any) -> dict[str, Any]:
    return {"access_point": {"tls": {"certificates": [CERT], **fields}}}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"access_point": {"tls": {"certificates": []}}},
            "ap.yaml: access_point.tls.certificates: ",
        ),
        (tls(min_version="1.1"), "ap.yaml: access_point.tls.min_version: "),
        (tls(redirect_listen="port 80"), "ap.yaml: access_point.tls.redirect_listen: "),
        (tls(redirect_status=302), "ap.yaml: access_point.tls.redirect_status: "),
        (tls(hsts_max_age="forever"), "ap.yaml: access_point.tls.hsts_max_age: not a duration"),
        (tls(ciphers="ALL"), "ap.yaml: access_point.tls.ciphers: "),
        (
            {
                "access_point": {
                    "tls": {
                        "certificates": [
                            {**CERT, "cert_file": "-----BEGIN CERTIFICATE-----\nMIIB..."}
                        ]
                    }
                }
            },
            "ap.yaml: access_point.tls.certificates[0].cert_file: must be the path of a PEM "
            "file on the Access Point's host, not the PEM text itself",
        ),
        (
            {"access_point": {"tls": {"certificates": [{"cert_file": "/a.crt"}]}}},
            "ap.yaml: access_point.tls.certificates[0].key_file: ",
        ),
        (
            {"access_point": {"tls": {"certificates": [{**CERT, "hosts": ["bad host"]}]}}},
            "ap.yaml: access_point.tls.certificates[0].hosts[0]: ",
        ),
    ],
)
def test_tls_refusals_name_the_field(document: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(AccessPointConfig, document, "ap.yaml")
    assert expected in str(caught.value)


def test_tls_defaults() -> None:
    config = validate(AccessPointConfig, tls(), "ap.yaml")
    settings = config.access_point.tls
    assert settings is not None
    assert (settings.min_version, settings.redirect_listen, settings.redirect_status) == (
        "1.2",
        None,
        308,
    )
    assert (settings.hsts_max_age, settings.hsts_include_subdomains) == (31_536_000, False)
    assert validate(AccessPointConfig, {}, "ap.yaml").access_point.tls is None
