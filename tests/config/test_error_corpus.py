"""A corpus of broken configuration documents, fed to the real command lines.

Installation configurations go to ``gatehouse config apply FILE`` against a real
Administration service; service configurations to each service's ``--config FILE``
(access-point, policy, authentication, administration), which exit at once on an invalid file.
Each document starts from a valid one and breaks one thing, so the field path at fault is
certain. Every message must name the file and that path, show none of our Python names (class
or module names) nor pydantic's wording, and the command must exit 2 without a traceback.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import gatehouse
from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.service import AdministrationConfig
from gatehouse.authentication.config import AuthenticationConfig
from gatehouse.cli import main
from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import load_file, validate
from gatehouse.config.policy import PolicyConfig
from tests.administration.test_api import Admin, as_yaml, single_node
from tests.support.processes import GATEHOUSE

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_AP = REPO / "examples" / "access-point.yaml"

# --- what no message may show --------------------------------------------------------------


def our_class_names() -> frozenset[str]:
    """Every class defined in the gatehouse package."""
    names: set[str] = set()
    for module in Path(gatehouse.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
    return frozenset(names)


CLASS_NAMES = our_class_names()
BANNED_TEXT = ("Input should be", "pydantic", "Traceback", "Value error", "gatehouse.")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def banned_in(message: str) -> list[str]:
    found = [text for text in BANNED_TEXT if text in message]
    return found + [word for word in _WORD.findall(message) if word in CLASS_NAMES]


# --- valid starting points -----------------------------------------------------------------

DELETE = object()


def installation() -> dict[str, Any]:
    """The single-node installation with named rules using ip and time conditions."""
    config = single_node()
    config["rules"] = {
        "staff": {"groups_any": ["staff"]},
        "office": {"ip": ["10.0.0.0/8", "192.0.2.7"]},
        "hours": {"time": {"days": ["mon", "tue"], "from": "08:00", "to": "18:00"}},
    }
    config["resource_rules"] = {
        "demo": {"all": [{"rule": "staff"}, {"any": [{"rule": "office"}, {"rule": "hours"}]}]},
        "demo-public": "public",
    }
    return config


def access_point() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE_AP.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def policy() -> dict[str, Any]:
    return {
        "policy": {"listen": "127.0.0.1:8101", "authentication": ["http://127.0.0.1:8201"]},
        "sessions": {"idle_timeout": "30m", "absolute_timeout": "12h"},
        "rules": {
            "staff": {"groups_any": ["staff"]},
            "office": {"ip": ["10.0.0.0/8"]},
            "hours": {"time": {"from": "08:00", "to": "18:00"}},
        },
        "global_rule": "authenticated",
        "resources": {"wiki": {"all": [{"rule": "staff"}, {"rule": "office"}]}},
    }


def authentication() -> dict[str, Any]:
    return {
        "authentication": {
            "listen": "127.0.0.1:8201",
            "lockout": {"account_max_failures": 5, "account_window": "15m"},
            "password_hash": {"time_cost": 2},
        }
    }


def administration() -> dict[str, Any]:
    return {"administration": {"listen": "127.0.0.1:8001", "lock_check_interval": "5s"}}


BASES = {
    "installation": (installation, InstallationConfig),
    "access-point": (access_point, AccessPointConfig),
    "policy": (policy, PolicyConfig),
    "authentication": (authentication, AuthenticationConfig),
    "administration": (administration, AdministrationConfig),
}


def changed(schema: str, where: str, value: object = DELETE) -> str:
    """The valid document of ``schema`` as YAML with the value at ``where`` (``a.0.b``)
    replaced, or removed with DELETE."""
    data: Any = BASES[schema][0]()
    *parents, last = where.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    key: Any = int(last) if isinstance(target, list) else last
    if value is DELETE:
        del target[key]
    else:
        target[key] = copy.deepcopy(value)
    return as_yaml(data)


def inserted(schema: str, after: str, line: str) -> str:
    """The valid document as YAML with ``line`` added after the line ``after``."""
    text = EXAMPLE_AP.read_text() if schema == "access-point" else as_yaml(BASES[schema][0]())
    assert text.count(after + "\n") == 1, after
    return text.replace(after + "\n", f"{after}\n{line}\n")


# --- the corpus ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    name: str
    schema: str
    kind: str  # what is broken, for the breadth check
    text: str
    paths: tuple[str, ...]  # the field path of every problem reported, in order


def doc(name: str, schema: str, kind: str, text: str, *paths: str) -> Doc:
    return Doc(name, schema, kind, text, paths)


INST, AP, PS, AUTH, ADMIN = (
    "installation",
    "access-point",
    "policy",
    "authentication",
    "administration",
)
TIME = {"from": "25:00", "to": "18:00"}

CORPUS = [
    # the installation, through gatehouse config apply
    doc("inst-list", INST, "top-level", "- services\n- resources\n", "top level"),
    doc("inst-string", INST, "top-level", "services and resources\n", "top level"),
    doc("inst-services-mapping", INST, "type", changed(INST, "services", {"ap1": {}}), "services"),
    doc("inst-service-string", INST, "type", changed(INST, "services.0", "ap1"), "services[0]"),
    doc("inst-role", INST, "type", changed(INST, "services.1.role", "gateway"), "services[1].role"),
    doc("inst-node-missing", INST, "missing", changed(INST, "services.0.node"), "services[0].node"),
    doc("inst-unknown-section", INST, "unknown", changed(INST, "resource", []), "resource"),
    doc(
        "inst-unknown-ap-key",
        INST,
        "unknown",
        changed(INST, "access_points.0.worker", 2),
        "access_points[0].worker",
    ),
    doc(
        "inst-workers-text",
        INST,
        "type",
        changed(INST, "access_points.0.workers", "many"),
        "access_points[0].workers",
    ),
    doc(
        "inst-duration",
        INST,
        "duration",
        changed(INST, "access_points.0.header_timeout", "soon"),
        "access_points[0].header_timeout",
    ),
    doc(
        "inst-size",
        INST,
        "size",
        changed(INST, "access_points.0.max_header_bytes", "lots"),
        "access_points[0].max_header_bytes",
    ),
    doc(
        "inst-backend-url",
        INST,
        "url",
        changed(INST, "resources.0.backends", ["ftp://files"]),
        "resources[0].backends[0]",
    ),
    doc(
        "inst-endpoint-url",
        INST,
        "url",
        changed(INST, "services.2.endpoint", "auth1:8201"),
        "services[2].endpoint",
    ),
    doc(
        "inst-duplicate-resource-id",
        INST,
        "duplicate-id",
        changed(INST, "resources.1.id", "demo"),
        "resources[1].id",
        "resource_rules.demo-public",
    ),
    doc(
        "inst-duplicate-service-id",
        INST,
        "duplicate-id",
        changed(INST, "services.2.id", "ps1"),
        "services[2].id",
        # what the duplicate makes of the entries that name it
        "policy_services[0].id",
        "access_points[0].policy_services[0]",
        "policy_services[0].authentication[0]",
    ),
    doc(
        "inst-dangling-rule",
        INST,
        "dangling-rule",
        changed(INST, "resource_rules.demo", {"rule": "stafff"}),
        "resource_rules.demo.rule",
    ),
    doc(
        "inst-dangling-global-rule",
        INST,
        "dangling-rule",
        changed(INST, "global_rule", {"rule": "everyone"}),
        "global_rule.rule",
    ),
    doc(
        "inst-cidr",
        INST,
        "cidr",
        changed(INST, "rules.office", {"ip": ["10.0.0.0/33"]}),
        "rules.office.ip[0]",
    ),
    doc(
        "inst-ap-trusted-proxies",
        INST,
        "cidr",
        changed(INST, "access_points.0.trusted_proxies", ["10.1.2.3/8x"]),
        "access_points[0].trusted_proxies[0]",
    ),
    doc(
        "inst-time",
        INST,
        "time-window",
        changed(INST, "rules.hours", {"time": TIME}),
        "rules.hours.time.from",
    ),
    doc(
        "inst-no-authentication",
        INST,
        "type",
        changed(INST, "policy_services.0.authentication", []),
        "policy_services[0].authentication",
    ),
    doc(
        "inst-idle-timeout",
        INST,
        "duration",
        changed(INST, "sessions", {"idle_timeout": -5}),
        "sessions.idle_timeout",
    ),
    doc("inst-databases", INST, "type", changed(INST, "databases", "db1"), "databases"),
    doc(
        "inst-time-cost",
        INST,
        "type",
        changed(INST, "authentication", {"password_hash": {"time_cost": "high"}}),
        "authentication.password_hash.time_cost",
    ),
    doc(
        "inst-yaml-duplicate-top",
        INST,
        "duplicate-yaml-key",
        as_yaml(installation()) + "global_rule: authenticated\n",
        "top level",
    ),
    doc(
        "inst-yaml-duplicate-nested",
        INST,
        "duplicate-yaml-key",
        inserted(INST, "  path_prefix: /public", "  path_prefix: /pub"),
        "resources[1]",
    ),
    # gatehouse access-point --config FILE
    doc("ap-list", AP, "top-level", "- resources\n", "top level"),
    doc("ap-section-string", AP, "type", changed(AP, "access_point", "fast"), "access_point"),
    doc(
        "ap-workers", AP, "type", changed(AP, "access_point.workers", "two"), "access_point.workers"
    ),
    doc("ap-public", AP, "type", changed(AP, "resources.0.public", "maybe"), "resources[0].public"),
    doc(
        "ap-unknown", AP, "unknown", changed(AP, "resources.0.colour", "red"), "resources[0].colour"
    ),
    doc(
        "ap-duration",
        AP,
        "duration",
        changed(AP, "access_point.header_timeout", "10 secs"),
        "access_point.header_timeout",
    ),
    doc(
        "ap-size",
        AP,
        "size",
        changed(AP, "access_point.max_header_bytes", "32 kilobytes"),
        "access_point.max_header_bytes",
    ),
    doc(
        "ap-cidr",
        AP,
        "cidr",
        changed(AP, "access_point.trusted_proxies", ["10.0.0.0/33"]),
        "access_point.trusted_proxies[0]",
    ),
    doc(
        "ap-url",
        AP,
        "url",
        changed(AP, "resources.0.backends", ["nope"]),
        "resources[0].backends[0]",
    ),
    doc(
        "ap-duplicate-id",
        AP,
        "duplicate-id",
        changed(AP, "resources", [access_point()["resources"][0]] * 2),
        "resources[1].id",
    ),
    doc(
        "ap-yaml-duplicate",
        AP,
        "duplicate-yaml-key",
        inserted(
            AP,
            "    public: true                  # no login needed (default false)",
            "    public: false",
        ),
        "resources[0]",
    ),
    # gatehouse policy --config FILE
    doc("ps-string", PS, "top-level", "policy\n", "top level"),
    doc("ps-rules-list", PS, "type", changed(PS, "rules", ["staff"]), "rules"),
    doc("ps-unknown", PS, "unknown", changed(PS, "policy.colour", "red"), "policy.colour"),
    doc(
        "ps-duration",
        PS,
        "duration",
        changed(PS, "sessions.idle_timeout", "half an hour"),
        "sessions.idle_timeout",
    ),
    doc(
        "ps-url",
        PS,
        "url",
        changed(PS, "policy.authentication", ["auth1"]),
        "policy.authentication[0]",
    ),
    doc(
        "ps-dangling-rule",
        PS,
        "dangling-rule",
        changed(PS, "resources.wiki", {"rule": "stafff"}),
        "resources.wiki.rule",
    ),
    doc(
        "ps-cidr",
        PS,
        "cidr",
        changed(PS, "rules.office", {"ip": ["300.0.0.0/8"]}),
        "rules.office.ip[0]",
    ),
    doc(
        "ps-time",
        PS,
        "time-window",
        changed(PS, "rules.hours", {"time": TIME}),
        "rules.hours.time.from",
    ),
    doc(
        "ps-yaml-duplicate",
        PS,
        "duplicate-yaml-key",
        as_yaml(policy()) + "rules: {}\n",
        "top level",
    ),
    # gatehouse authentication --config FILE
    doc("auth-list", AUTH, "top-level", "- authentication\n", "top level"),
    doc(
        "auth-duration",
        AUTH,
        "duration",
        changed(AUTH, "authentication.lockout.account_window", "a while"),
        "authentication.lockout.account_window",
    ),
    doc(
        "auth-failures",
        AUTH,
        "type",
        changed(AUTH, "authentication.lockout.account_max_failures", 0),
        "authentication.lockout.account_max_failures",
    ),
    doc(
        "auth-unknown",
        AUTH,
        "unknown",
        changed(AUTH, "authentication.lockout.max", 3),
        "authentication.lockout.max",
    ),
    doc(
        "auth-user-db",
        AUTH,
        "url",
        changed(AUTH, "authentication.user_db", "users.db"),
        "authentication.user_db",
    ),
    doc(
        "auth-yaml-duplicate",
        AUTH,
        "duplicate-yaml-key",
        inserted(AUTH, "  listen: 127.0.0.1:8201", "  listen: 127.0.0.1:8202"),
        "authentication",
    ),
    # gatehouse administration --config FILE
    doc("admin-number", ADMIN, "top-level", "8001\n", "top level"),
    doc(
        "admin-duration",
        ADMIN,
        "duration",
        changed(ADMIN, "administration.lock_check_interval", "often"),
        "administration.lock_check_interval",
    ),
    doc(
        "admin-listen",
        ADMIN,
        "type",
        changed(ADMIN, "administration.listen", ["127.0.0.1:8001"]),
        "administration.listen",
    ),
    doc(
        "admin-unknown",
        ADMIN,
        "unknown",
        changed(ADMIN, "administration.lisen", "127.0.0.1:8001"),
        "administration.lisen",
    ),
    doc(
        "admin-yaml-duplicate",
        ADMIN,
        "duplicate-yaml-key",
        as_yaml(administration()) + "administration: {}\n",
        "top level",
    ),
]

KINDS = {
    "top-level",
    "type",
    "missing",
    "unknown",
    "duration",
    "size",
    "duplicate-id",
    "dangling-rule",
    "cidr",
    "time-window",
    "url",
    "duplicate-yaml-key",
}


def test_the_corpus_is_broad_and_starts_from_valid_documents() -> None:
    assert len(CORPUS) >= 30
    assert len({d.name for d in CORPUS}) == len(CORPUS)
    assert {d.kind for d in CORPUS} == KINDS
    assert {d.schema for d in CORPUS} == set(BASES)
    for make, model in BASES.values():
        validate(model, make())
    load_file(AccessPointConfig, EXAMPLE_AP)
    assert {"InstallationConfig", "AccessPointConfig", "Resource"} <= CLASS_NAMES


# --- running the commands ------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    file: str
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def corpus_admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    process = Admin(tmp_path_factory.mktemp("corpus-admin") / "home")
    try:
        yield process.start()
    finally:
        process.stop()


#: How long a command may run before it counts as started (it took the file): killed.
RUN_TIMEOUT = 30.0


def forked(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``gatehouse ARGS`` run by :func:`gatehouse.cli.main` in a fork of this process (the
    package is imported once, not once per document): exit code, standard output and error.
    A command still running after :data:`RUN_TIMEOUT` (it took the file) is killed: -1."""
    out, err = cwd / f".out-{os.getpid()}", cwd / f".err-{os.getpid()}"
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 70
        try:
            os.chdir(cwd)
            with out.open("w") as sys.stdout, err.open("w") as sys.stderr:
                code = main(args)
        finally:
            os._exit(code)
    deadline = time.monotonic() + RUN_TIMEOUT
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -1, "", f"still running after {RUN_TIMEOUT:g} s"
        time.sleep(0.005)
    return os.waitstatus_to_exitcode(done[1]), out.read_text(), err.read_text()


def spawned(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``gatehouse ARGS`` as a new process, as an operator runs it."""
    try:
        done = subprocess.run(
            [*GATEHOUSE, *args], capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=cwd
        )
    except subprocess.TimeoutExpired:  # killed: it took the file and started
        return -1, "", f"still running after {RUN_TIMEOUT:g} s"
    return done.returncode, done.stdout, done.stderr


#: One document of each schema also runs as a real command line (``python -m gatehouse``):
#: the rest run through the same ``main`` in a fork, which costs no interpreter start.
SPAWNED = frozenset({"inst-list", *(next(d.name for d in CORPUS if d.schema == s) for s in BASES)})


@pytest.fixture(scope="module")
def runs(corpus_admin: Admin, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every document through its command."""
    directory = tmp_path_factory.mktemp("corpus")
    home = directory / "home"

    def args_of(document: Doc, file: Path) -> list[str]:
        if document.schema == INST:
            return ["config", "apply", str(file), "--home", str(corpus_admin.home)]
        if document.schema == AP:
            return [AP, "--config", str(file)]
        return [document.schema, "--config", str(file), "--home", str(home)]

    def run(document: Doc, how: Callable[[list[str], Path], tuple[int, str, str]]) -> Run:
        file = directory / f"{document.name}.yaml"
        file.write_text(document.text, encoding="utf-8")
        return Run(str(file), *how(args_of(document, file), directory))

    with ThreadPoolExecutor(max_workers=len(SPAWNED)) as pool:
        real = {d.name: pool.submit(run, d, spawned) for d in CORPUS if d.name in SPAWNED}
        results = {d.name: run(d, forked) for d in CORPUS if d.name not in SPAWNED}
        results.update({name: future.result() for name, future in real.items()})
    return results


def test_some_documents_ran_as_real_command_lines() -> None:
    assert len(SPAWNED) == len(BASES)
    assert {d.schema for d in CORPUS if d.name in SPAWNED} == set(BASES)


@pytest.mark.parametrize("document", CORPUS, ids=[d.name for d in CORPUS])
def test_every_message_names_the_file_and_the_field(document: Doc, runs: dict[str, Run]) -> None:
    run = runs[document.name]
    assert (run.code, run.stdout) == (2, ""), run
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines, run
    prefix = f"gatehouse: {run.file}: "
    paths = []
    for line in lines:
        assert line.startswith(prefix), line
        path, _, message = line[len(prefix) :].partition(": ")
        assert message, line
        assert banned_in(f"{path}: {message}") == [], line
        paths.append(path)
    assert tuple(paths) == document.paths, lines
