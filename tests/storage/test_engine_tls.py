"""TLS parameters of PostgreSQL URLs: read by the engine (asyncpg takes ``sslrootcert`` only
from a DSN), kept through multi-host URLs and the LISTEN/NOTIFY connection arguments, and
every mistake a sentence."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gatehouse.errors import ConfigError
from gatehouse.storage.engine import asyncpg_connect_args, create_engine, parse_url
from gatehouse.storage.home import database_urls
from gatehouse.trust.ca import CertificateAuthority

MULTI = "postgresql+asyncpg://svc@/gatehouse?host=db1,db2&port=5432,5433"


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(CertificateAuthority.create().certificate_pem)
    return path


def test_verify_full_with_a_ca_file_is_a_context_that_checks_chain_and_host(
    ca_file: Path,
) -> None:
    url = f"{MULTI}&sslmode=verify-full&sslrootcert={ca_file}&passfile=/run/pgpass"
    args = asyncpg_connect_args(url)
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1
    # The rest of the URL is as before: every host, read-write, the password file.
    assert args["host"] == ["db1", "db2"]
    assert args["port"] == [5432, 5433]
    assert args["target_session_attrs"] == "read-write"
    assert args["passfile"] == "/run/pgpass"
    assert "sslrootcert" not in args
    assert "sslmode" not in args


def test_asyncpgs_ssl_name_and_verify_ca(ca_file: Path) -> None:
    context = asyncpg_connect_args(f"{MULTI}&ssl=verify-ca&sslrootcert={ca_file}")["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname


def test_a_mode_without_a_ca_file_is_left_to_asyncpg() -> None:
    assert asyncpg_connect_args(f"{MULTI}&sslmode=disable")["ssl"] == "disable"
    assert asyncpg_connect_args(f"{MULTI}&ssl=require")["ssl"] == "require"
    assert "ssl" not in asyncpg_connect_args(MULTI)


def test_the_engine_connects_with_the_context(ca_file: Path) -> None:
    url = f"postgresql+asyncpg://svc@db1:5432/gatehouse?sslmode=verify-full&sslrootcert={ca_file}"
    engine = create_engine(url)
    assert "sslrootcert" not in engine.url.query
    assert "sslmode" not in engine.url.query
    engine.sync_engine.dispose()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=verify_full", "sslmode 'verify_full' is not one of disable, allow, prefer"),
        ("ssl=require&sslmode=verify-full", "ssl and sslmode disagree"),
        ("sslrootcert=/ca.pem", "sslrootcert needs sslmode=verify-full"),
        ("sslmode=prefer&sslrootcert=/ca.pem", "with prefer the server's certificate is not"),
        ("sslmode=require&sslcert=/c.pem", "sslcert is not supported"),
        ("sslmode=require&sslmode=verify-full", "sslmode is given more than once"),
    ],
)
def test_tls_mistakes_are_sentences(query: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_url(f"{MULTI}&{query}")
    assert message in str(raised.value)


def test_an_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    url = f"{MULTI}&sslmode=verify-full&sslrootcert={missing}"
    parse_url(url)  # the file may be on another node: read when connecting
    with pytest.raises(ConfigError, match=rf"sslrootcert {missing}: No such file"):
        create_engine(url)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="not a PEM CA certificate"):
        asyncpg_connect_args(f"{MULTI}&sslmode=verify-full&sslrootcert={garbage}")


def test_the_databases_file_refuses_a_bad_mode(tmp_path: Path) -> None:
    (tmp_path / "databases.yaml").write_text(f"user_db: '{MULTI}&sslmode=on'\n")
    with pytest.raises(ConfigError, match="user_db: PostgreSQL URL: sslmode 'on' is not one of"):
        database_urls(tmp_path)
