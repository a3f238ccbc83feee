"""The demo "whoami" backend: echoes requests back as JSON, for tests, the demo and benchmarks."""
