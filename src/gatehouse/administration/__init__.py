"""The Administration service: the one place configuration is changed, and its publisher.

- :mod:`.model` — ``InstallationConfig``, the whole installation, validated across fields;
- :mod:`.views` — ``view_for(config, service_id)``: what each service loads;
- :mod:`.signing` — Ed25519 keys, signed envelopes per service, ``verify``;
- :mod:`.store` — ``AdminStore``: draft, versions (publish, rollback), services, join tokens,
  audit, on SQLite or PostgreSQL (tables in :mod:`.tables`, Alembic branch ``admin``);
- :mod:`.lock` — exactly one Admin per database;
- :mod:`.diff` — unified diffs of canonical YAML; :mod:`.document` — text to config and back.
"""
