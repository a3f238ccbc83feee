"""The Authentication service: checks credentials against the user DB, with brute-force limits."""
