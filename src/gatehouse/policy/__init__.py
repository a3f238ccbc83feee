"""The Policy service's pure core: access rules and decisions (no I/O).

- :mod:`gatehouse.policy.rules` — three-valued conditions and their evaluation context;
- :mod:`gatehouse.policy.rules_time` — DST-correct time windows and their next edge;
- :mod:`gatehouse.policy.rules_compile` — the YAML rule language and its compiler;
- :mod:`gatehouse.policy.decision` — :func:`decide` and its inputs and outcomes.

The configuration model is :class:`gatehouse.config.policy.PolicyConfig`. Typical use::

    config = load_file(PolicyConfig, path)     # ConfigError with field paths
    policy = compile_policy(config)            # once per config version
    decision = decide(policy, DecisionInput(...), session_view_or_none, now)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatehouse.policy.decision import (
        PRIMARY_METHOD,
        Allow,
        Authenticate,
        CompiledPolicy,
        Decision,
        DecisionInput,
        Deny,
        IdentityHeaderNames,
        SessionView,
        compile_policy,
        decide,
        header_safe,
        identity_headers,
    )
    from gatehouse.policy.rules import Condition, EvalContext, Principal, Tri, Verdict, evaluate
    from gatehouse.policy.rules_compile import RuleSet, check_rule_set, compile_rule_set
    from gatehouse.policy.rules_time import TimeWindow

#: Where each name lives: imported at first use, so that importing one module of the package
#: (the Access Point imports ``gatehouse.policy.calls``, the wire formats) does not load the
#: rules engine and its regular expression library.
_HOMES = {
    **dict.fromkeys(
        (
            "PRIMARY_METHOD",
            "Allow",
            "Authenticate",
            "CompiledPolicy",
            "Decision",
            "DecisionInput",
            "Deny",
            "IdentityHeaderNames",
            "SessionView",
            "compile_policy",
            "decide",
            "header_safe",
            "identity_headers",
        ),
        "decision",
    ),
    **dict.fromkeys(
        ("Condition", "EvalContext", "Principal", "Tri", "Verdict", "evaluate"), "rules"
    ),
    **dict.fromkeys(("RuleSet", "check_rule_set", "compile_rule_set"), "rules_compile"),
    "TimeWindow": "rules_time",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "PRIMARY_METHOD",
    "Allow",
    "Authenticate",
    "CompiledPolicy",
    "Condition",
    "Decision",
    "DecisionInput",
    "Deny",
    "EvalContext",
    "IdentityHeaderNames",
    "Principal",
    "RuleSet",
    "SessionView",
    "TimeWindow",
    "Tri",
    "Verdict",
    "check_rule_set",
    "compile_policy",
    "compile_rule_set",
    "decide",
    "evaluate",
    "header_safe",
    "identity_headers",
]
