"""Configuration models and loading (pydantic v2 models, YAML files)."""
