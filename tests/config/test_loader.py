"""Config loading: YAML problems and validation errors name the line or the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.config.access_point import AccessPointConfig, Backend
from gatehouse.config.loader import field_path, load_file, validate
from gatehouse.config.units import parse_duration, parse_size
from gatehouse.errors import ConfigError


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate(AccessPointConfig, data)
    return info.value.problems


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("resources", 2, "backends", 0), "resources[2].backends[0]"),
        (("access_point", "listen"), "access_point.listen"),
        ((), ""),
    ],
)
def test_field_path(loc: tuple[int | str, ...], path: str) -> None:
    assert field_path(loc) == path


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        (
            {"resources": [{"id": "a", "backends": ["http://x"]}, {"id": "b", "backends": ["x"]}]},
            "resources[1].backends[0]",
            "not a URL",
        ),
        ({"resources": [{"id": "a", "backends": ["ftp://x"]}]}, "resources[0].backends[0]", "URL"),
        ({"resources": [{"id": "a", "backends": []}]}, "resources[0].backends", "at least 1"),
        ({"resources": [{"id": "A B", "backends": ["http://x"]}]}, "resources[0].id", "lowercase"),
        (
            {"resources": [{"id": "a", "backends": ["http://x"], "colour": 1}]},
            "resources[0].colour",
            "unknown field",
        ),
        ({"access_point": {"listen": "nope"}}, "access_point.listen", "HOST:PORT"),
        ({"access_point": {"workers": 0}}, "access_point.workers", "must be at least 1"),
        ({"access_point": {"header_timeout": "soon"}}, "access_point.header_timeout", "duration"),
        ({"access_point": {"max_header_bytes": "lots"}}, "access_point.max_header_bytes", "size"),
        (
            {"access_point": {"trusted_proxies": ["10.0.0.0/33"]}},
            "access_point.trusted_proxies[0]",
            "not an IP network",
        ),
        (
            {"access_point": {"identity_headers": ["Remote User"]}},
            "access_point.identity_headers[0]",
            "header name",
        ),
        (
            {"access_point": {"reserved_prefix": "_gh"}},
            "access_point.reserved_prefix",
            "start and end",
        ),
        (
            {"resources": [{"id": "a", "backends": ["http://x"], "hosts": ["bad host"]}]},
            "resources[0].hosts[0]",
            "not a host name",
        ),
        (
            {"resources": [{"id": "a", "backends": ["http://x"], "path_prefix": "app"}]},
            "resources[0].path_prefix",
            "absolute",
        ),
        (
            {"resources": [{"id": "a", "backends": ["http://x"], "path_prefix": "/a/../b"}]},
            "resources[0].path_prefix",
            "segments",
        ),
        (
            {"resources": [{"id": "a", "backends": ["http://x?q=1"]}]},
            "resources[0].backends[0]",
            "query",
        ),
    ],
)
def test_errors_name_the_field(data: object, path: str, fragment: str) -> None:
    found = problems(data)
    paths = [p for p, _ in found]
    assert path in paths, found
    assert any(fragment in msg for _, msg in found), found


def test_duplicate_resource_ids_refused() -> None:
    data = {"resources": [{"id": "a", "backends": ["http://x"]}] * 2}
    assert problems(data) == [("resources[1].id", "duplicate resource id 'a'")]


def test_defaults_and_units() -> None:
    config = validate(
        AccessPointConfig,
        {
            "access_point": {"header_timeout": "250ms", "max_header_bytes": "16KiB"},
            "resources": [{"id": "a", "backends": ["https://h.example:8443/base/"]}],
        },
    )
    assert config.access_point.header_timeout == 0.25
    assert config.access_point.max_header_bytes == 16 * 1024
    resource = config.resources[0]
    assert resource.hosts == ["*"]
    assert resource.public is False
    backend = resource.parsed_backends()[0]
    assert (backend.scheme, backend.host, backend.port, backend.base_path) == (
        "https",
        "h.example",
        8443,
        "/base",
    )
    assert backend.host_header == "h.example:8443"
    assert Backend.parse("http://[::1]/").host_header == "[::1]"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1024, 1024),
        ("10", 10),
        ("64KiB", 65536),
        ("10m", 10 << 20),
        ("1GiB", 1 << 30),
        ("2 MB", 2 << 20),
    ],
)
def test_sizes(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5.0), ("30", 30.0), ("30s", 30.0), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0)],
)
def test_durations(value: object, expected: float) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["x", "-1", "1.5.2s", True])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("access_point:\n  listen: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_file(AccessPointConfig, path)
    assert "line" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_file(AccessPointConfig, tmp_path / "absent.yaml")


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_file(AccessPointConfig, path).resources == []
