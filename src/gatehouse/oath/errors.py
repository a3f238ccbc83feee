"""Errors of the OATH logic: each says which token, parameter, element or line is wrong.

GatehouseError, ValueError
 └── OathError
      ├── ParamsError       a token parameter (type, algorithm, digits, period) is not allowed
      ├── SeedError         a seed is too short to be safe
      ├── KeyringError      the seed key file cannot be used, or a seed does not decrypt
      └── OathImportError   an otpauth:// URI, PSKC file or CSV file is refused; carries where
"""

from __future__ import annotations

from gatehouse.errors import GatehouseError


class OathError(GatehouseError, ValueError):
    """Base of the errors below; a ValueError so callers parsing input may catch that."""


class ParamsError(OathError):
    """A token parameter outside the allowed values; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class SeedError(OathError):
    """A seed refused before it is stored (too short)."""


class KeyringError(OathError):
    """The seed keyring file is unreadable, malformed or unsafe, or a seed fails to decrypt."""


class OathImportError(OathError):
    """An import refused, rendered ``location: message`` (e.g. ``line 3, column 2 (seed)``)."""

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}" if location else message)
