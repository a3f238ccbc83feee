"""PSKC (RFC 6030) key container import: plain seeds, and seeds under a pre-shared key.

https://www.rfc-editor.org/rfc/rfc6030

A protected container encrypts each value with AES-CBC (the IV is the first 16 bytes of the
CipherValue) and authenticates it with an HMAC over the whole CipherValue, under a MAC key
that is itself encrypted in ``MACMethod/MACKey`` (section 6.1). Every MAC is checked before any
token is returned and one wrong MAC refuses the whole file: a vendor file that was altered in
transit must not half-import. Errors name the element, e.g.
``KeyPackage 2/Key/Data/Secret: MAC does not match``.

XML is read with the standard library; a document with a DTD is refused outright, which keeps
out entity expansion and external entities whatever the Expat version.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from typing import NoReturn
from xml.etree import ElementTree

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gatehouse.oath.errors import OathImportError, ParamsError, SeedError
from gatehouse.oath.otp import MAX_COUNTER
from gatehouse.oath.seeds import check_seed_length
from gatehouse.oath.token_spec import (
    Algorithm,
    ImportedToken,
    TokenParams,
    TokenType,
    parse_algorithm,
    parse_digits,
    parse_period,
    parse_type,
)

NS = {
    "pskc": "urn:ietf:params:xml:ns:keyprov:pskc",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xenc": "http://www.w3.org/2001/04/xmlenc#",
}
#: Encryption algorithms of EncryptedValue and MACKey, and the key length each needs.
CIPHERS = {
    "http://www.w3.org/2001/04/xmlenc#aes128-cbc": 16,
    "http://www.w3.org/2001/04/xmlenc#aes192-cbc": 24,
    "http://www.w3.org/2001/04/xmlenc#aes256-cbc": 32,
}
#: MACMethod algorithms (RFC 6030 section 6.1.1 names HMAC-SHA1; RFC 6931 the others).
MACS = {
    "http://www.w3.org/2000/09/xmldsig#hmac-sha1": "sha1",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384": "sha384",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512": "sha512",
}
_KEY_ALGORITHM = re.compile(r"(hotp|totp)(?:[-_]?(sha1|sha256|sha512))?", re.IGNORECASE)
_IV = 16


def parse_pskc(data: bytes, preshared_key: bytes | None) -> list[ImportedToken]:
    """Every HOTP/TOTP key in the container, or an :class:`OathImportError` and none.

    Args:
        data: the PSKC document.
        preshared_key: the raw AES key a protected container was encrypted with; None for
            a container of plain values.
    """
    root = _parse_xml(data)
    if root.tag != _tag("KeyContainer"):
        namespace, _, local = root.tag.rpartition("}")
        where = f"in namespace {namespace[1:]}" if namespace else "in no namespace"
        _fail(
            "KeyContainer",
            f"not a PSKC key container (the root element is {local} {where}; "
            f"expected KeyContainer in {NS['pskc']})",
        )
    if root.get("Version", "1.0") != "1.0":
        _fail("KeyContainer", f"Version {root.get('Version')!r} is not supported (1.0 is)")
    values = _Values(root, preshared_key)
    tokens: list[ImportedToken] = []
    where_serial: dict[str, str] = {}
    for index, package in enumerate(root.findall("pskc:KeyPackage", NS), start=1):
        location = f"KeyPackage {index}"
        token = _read_package(package, location, values)
        assert token.serial is not None
        if token.serial in where_serial:
            _fail(location, f"serial {token.serial!r} is also {where_serial[token.serial]}'s")
        where_serial[token.serial] = location
        tokens.append(token)
    if not tokens:
        _fail("KeyContainer", "has no KeyPackage")
    return tokens


class _NoDoctype(ElementTree.TreeBuilder):
    """A tree builder that refuses a DTD (Expat calls ``doctype`` on the target)."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise OathImportError("XML", "a DOCTYPE is not allowed in a PSKC file")


def _parse_xml(data: bytes) -> ElementTree.Element:
    parser = ElementTree.XMLParser(target=_NoDoctype())
    try:
        parser.feed(data)
        return parser.close()
    except ElementTree.ParseError as exc:
        raise OathImportError("XML", f"not well-formed: {exc}") from None


def _read_package(package: ElementTree.Element, location: str, values: _Values) -> ImportedToken:
    keys = package.findall("pskc:Key", NS)
    if len(keys) != 1:
        _fail(location, f"has {len(keys)} Key elements; one is expected")
    key = keys[0]
    here = f"{location}/Key"
    token_type, urn_hash = _key_algorithm(key.get("Algorithm"), here)
    serial = _text(package.find("pskc:DeviceInfo/pskc:SerialNo", NS)) or key.get("Id", "").strip()
    if not serial:
        _fail(location, "has no DeviceInfo/SerialNo and its Key no Id: no serial to give it")

    parameters = key.find("pskc:AlgorithmParameters", NS)
    suffix = _text(parameters.find("pskc:Suffix", NS)) if parameters is not None else ""
    hash_name: Algorithm = urn_hash or "sha1"
    if suffix:
        try:
            hash_name = parse_algorithm(suffix.lower().removeprefix("hmac-"))
        except ParamsError:
            _fail(f"{here}/AlgorithmParameters/Suffix", f"{suffix!r} is not SHA1, SHA256 or SHA512")
        if urn_hash and urn_hash != hash_name:
            _fail(f"{here}/AlgorithmParameters/Suffix", f"{suffix} contradicts the Algorithm URN")
    digits = 6
    response = parameters.find("pskc:ResponseFormat", NS) if parameters is not None else None
    if response is not None:
        format_here = f"{here}/AlgorithmParameters/ResponseFormat"
        if response.get("Encoding", "DECIMAL").upper() != "DECIMAL":
            _fail(format_here, f"Encoding {response.get('Encoding')} is not supported (DECIMAL is)")
        try:
            digits = parse_digits(response.get("Length", ""))
        except ParamsError as exc:
            _fail(f"{format_here} Length", exc.message)

    data = key.find("pskc:Data", NS)
    if data is None:
        _fail(here, "has no Data")
    secret_element = data.find("pskc:Secret", NS)
    if secret_element is None:
        _fail(f"{here}/Data", "has no Secret")
    secret = values.binary(secret_element, f"{here}/Data/Secret")
    try:
        check_seed_length(secret)
    except SeedError as exc:
        _fail(f"{here}/Data/Secret", str(exc))
    counter = 0
    if token_type == "hotp":
        counter = values.integer(data.find("pskc:Counter", NS), f"{here}/Data/Counter")
    if counter > MAX_COUNTER:
        _fail(f"{here}/Data/Counter", f"{counter} is beyond 2**64-1")
    period = 30
    if token_type == "totp":
        interval = data.find("pskc:TimeInterval", NS)
        if interval is not None:
            interval_here = f"{here}/Data/TimeInterval"
            try:
                period = parse_period(values.integer(interval, interval_here))
            except ParamsError as exc:
                _fail(interval_here, exc.message)
        if values.integer(data.find("pskc:Time", NS), f"{here}/Data/Time") != 0:
            _fail(f"{here}/Data/Time", "only T0 = 0 (the Unix epoch) is supported")
    params = TokenParams(token_type, hash_name, digits, period)
    issuer = _text(key.find("pskc:Issuer", NS)) or None
    return ImportedToken(serial, secret, params, counter, issuer=issuer)


def _key_algorithm(urn: str | None, here: str) -> tuple[TokenType, Algorithm | None]:
    """The token type and the hash a Key's Algorithm URN names, e.g. ``...:pskc:hotp``.

    The last ``:`` or ``#`` segment is read, so draft-era URNs (``...pskc#hotp``) and vendor
    suffixes (``totp-sha256``) are understood too.
    """
    if not urn:
        _fail(here, "has no Algorithm")
    match = _KEY_ALGORITHM.fullmatch(re.split(r"[:#]", urn.strip())[-1])
    if match is None:
        _fail(here, f"Algorithm {urn} is not HOTP or TOTP")
    hash_name = parse_algorithm(match.group(2)) if match.group(2) else None
    return parse_type(match.group(1)), hash_name


class _Values:
    """Reads PlainValue / EncryptedValue elements, decrypting and MAC-checking the latter."""

    def __init__(self, root: ElementTree.Element, preshared_key: bytes | None) -> None:
        self.key = preshared_key
        self.key_name = ""
        encryption_key = root.find("pskc:EncryptionKey", NS)
        self.unsupported_key = ""
        if encryption_key is not None:
            self.key_name = _text(encryption_key.find("ds:KeyName", NS))
            if not self.key_name:
                kinds = ", ".join(_local(child.tag) for child in encryption_key) or "nothing"
                self.unsupported_key = (
                    f"only a pre-shared key (ds:KeyName) is supported; EncryptionKey has {kinds}"
                )
        self.mac_method = root.find("pskc:MACMethod", NS)
        self._mac: tuple[bytes, str] | None = None

    def binary(self, holder: ElementTree.Element, here: str) -> bytes:
        """A base64 PlainValue, or the decrypted EncryptedValue."""
        plain = holder.find("pskc:PlainValue", NS)
        if plain is None:
            return self._decrypted(holder, here)
        try:
            return base64.b64decode("".join((plain.text or "").split()), validate=True)
        except binascii.Error:
            _fail(f"{here}/PlainValue", "not base64")

    def integer(self, holder: ElementTree.Element | None, here: str) -> int:
        """A decimal PlainValue, or an EncryptedValue holding big-endian bytes; 0 if absent."""
        if holder is None:
            return 0
        plain = holder.find("pskc:PlainValue", NS)
        if plain is None:
            return int.from_bytes(self._decrypted(holder, here), "big")
        text = _text(plain)
        if not (text.isascii() and text.isdigit()):
            _fail(f"{here}/PlainValue", f"not a non-negative integer: {text!r}")
        return int(text)

    def _decrypted(self, holder: ElementTree.Element, here: str) -> bytes:
        encrypted = holder.find("pskc:EncryptedValue", NS)
        if encrypted is None:
            _fail(here, "has neither PlainValue nor EncryptedValue")
        if self.unsupported_key:
            _fail("EncryptionKey", self.unsupported_key)
        if self.key is None:
            named = f" named {self.key_name!r}" if self.key_name else ""
            _fail(here, f"is encrypted; the pre-shared key{named} is needed to import this file")
        mac_element = holder.find("pskc:ValueMAC", NS)
        if mac_element is None:
            _fail(
                here, "is encrypted without a ValueMAC: a value that cannot be checked is refused"
            )
        blob, cipher = _cipher_value(encrypted, f"{here}/EncryptedValue")
        mac_key, mac_hash = self._mac_key()
        try:
            given = base64.b64decode("".join((mac_element.text or "").split()), validate=True)
        except binascii.Error:
            _fail(f"{here}/ValueMAC", "not base64")
        if not hmac.compare_digest(hmac.digest(mac_key, blob, mac_hash), given):
            _fail(
                here,
                "MAC does not match: the file was altered or the pre-shared key is wrong; "
                "nothing was imported",
            )
        return _decrypt(self.key, cipher, blob, f"{here}/EncryptedValue")

    def _mac_key(self) -> tuple[bytes, str]:
        """The MAC key and hash, decrypted once; without a MACKey the pre-shared key is used."""
        if self._mac is not None:
            return self._mac
        assert self.key is not None
        if self.mac_method is None:
            _fail("MACMethod", "missing: encrypted values need a MAC to be checked")
        algorithm = self.mac_method.get("Algorithm", "")
        if algorithm not in MACS:
            _fail("MACMethod", f"Algorithm {algorithm or 'none'} is not supported")
        encrypted_key = self.mac_method.find("pskc:MACKey", NS)
        if encrypted_key is None:
            mac_key = self.key
        else:
            blob, cipher = _cipher_value(encrypted_key, "MACMethod/MACKey")
            mac_key = _decrypt(self.key, cipher, blob, "MACMethod/MACKey")
        self._mac = (mac_key, MACS[algorithm])
        return self._mac


def _cipher_value(encrypted: ElementTree.Element, here: str) -> tuple[bytes, str]:
    """The CipherValue bytes (IV + ciphertext) and the encryption algorithm URI."""
    method = encrypted.find("xenc:EncryptionMethod", NS)
    algorithm = method.get("Algorithm", "") if method is not None else ""
    if algorithm not in CIPHERS:
        _fail(f"{here}/EncryptionMethod", f"Algorithm {algorithm or 'none'} is not supported")
    value = encrypted.find("xenc:CipherData/xenc:CipherValue", NS)
    if value is None:
        _fail(here, "has no CipherData/CipherValue")
    try:
        blob = base64.b64decode("".join((value.text or "").split()), validate=True)
    except binascii.Error:
        _fail(f"{here}/CipherData/CipherValue", "not base64")
    if len(blob) < 2 * _IV or len(blob) % _IV:
        _fail(f"{here}/CipherData/CipherValue", f"{len(blob)} bytes is not an IV and AES blocks")
    return blob, algorithm


def _decrypt(key: bytes, algorithm: str, blob: bytes, here: str) -> bytes:
    """AES-CBC with the XML Encryption padding (the last byte counts the padding bytes)."""
    if len(key) != CIPHERS[algorithm]:
        _fail(
            f"{here}/EncryptionMethod",
            f"{algorithm.rpartition('#')[2]} needs a {CIPHERS[algorithm]}-byte key; "
            f"the pre-shared key is {len(key)} bytes",
        )
    decryptor = Cipher(algorithms.AES(key), modes.CBC(blob[:_IV])).decryptor()
    padded = decryptor.update(blob[_IV:]) + decryptor.finalize()
    padding = padded[-1]
    if not 1 <= padding <= _IV:
        _fail(here, "does not decrypt to a padded value: is the pre-shared key right?")
    return padded[:-padding]


def _tag(name: str) -> str:
    return f"{{{NS['pskc']}}}{name}"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _text(element: ElementTree.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _fail(location: str, message: str) -> NoReturn:
    raise OathImportError(location, message)
