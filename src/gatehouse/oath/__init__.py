"""OATH one-time passwords (HOTP, TOTP): codes, seeds at rest, and token import."""
