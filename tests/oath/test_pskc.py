"""PSKC import against the RFC 6030 examples and protected files built here."""

from __future__ import annotations

import base64
import hmac
import re

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gatehouse.oath.errors import OathImportError
from gatehouse.oath.pskc import parse_pskc
from gatehouse.oath.token_spec import ImportedToken, TokenParams

SECRET = b"12345678901234567890"
PSK = bytes.fromhex("12345678901234567890123456789012")
MAC_KEY = bytes.fromhex("1122334455667788990011223344556677889900")

# RFC 6030 Figure 2: Basic PSKC Key Container Example (its secret is "1234", 32 bits).
FIGURE_2 = b"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    Id="exampleID1"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
    <KeyPackage>
        <Key Id="12345678"
            Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <Issuer>Issuer-A</Issuer>
            <Data>
                <Secret>
                    <PlainValue>MTIzNA==
                    </PlainValue>
                </Secret>
            </Data>
        </Key>
    </KeyPackage>
</KeyContainer>
"""

# RFC 6030 Figure 3: PSKC Key Container Example with Supplementary Data.
FIGURE_3 = b"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    Id="exampleID1"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
    <KeyPackage>
        <DeviceInfo>
            <Manufacturer>Manufacturer</Manufacturer>
            <SerialNo>987654321</SerialNo>
            <UserId>DC=example-bank,DC=net</UserId>
        </DeviceInfo>
        <CryptoModuleInfo>
            <Id>CM_ID_001</Id>
        </CryptoModuleInfo>
        <Key Id="12345678"
            Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <Issuer>Issuer</Issuer>
            <AlgorithmParameters>
                <ResponseFormat Length="8" Encoding="DECIMAL"/>
            </AlgorithmParameters>
            <Data>
                <Secret>
                    <PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=
                    </PlainValue>
                </Secret>
                <Counter>
                    <PlainValue>0</PlainValue>
                </Counter>
            </Data>
            <UserId>UID=jsmith,DC=example-bank,DC=net</UserId>
        </Key>
    </KeyPackage>
</KeyContainer>
"""

# RFC 6030 Figure 6 (section 6.1): AES-128-CBC Encrypted Pre-Shared Secret Key.
MAC_KEY_CIPHER = "ESIzRFVmd4iZABEiM0RVZgKn6WjLaTC1sbeBMSvIhRejN9vJa2BOlSaMrR7I5wSX"
SECRET_CIPHER = "AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv"
VALUE_MAC = "Su+NvtQfmvfJzF6bmQiJqoLRExc="
FIGURE_6 = f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
    <EncryptionKey>
        <ds:KeyName>Pre-shared-key</ds:KeyName>
    </EncryptionKey>
    <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
        <MACKey>
            <xenc:EncryptionMethod
            Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData>
                <xenc:CipherValue>
    {MAC_KEY_CIPHER}
                </xenc:CipherValue>
            </xenc:CipherData>
        </MACKey>
    </MACMethod>
    <KeyPackage>
        <DeviceInfo>
            <Manufacturer>Manufacturer</Manufacturer>
            <SerialNo>987654321</SerialNo>
        </DeviceInfo>
        <CryptoModuleInfo>
            <Id>CM_ID_001</Id>
        </CryptoModuleInfo>
        <Key Id="12345678"
            Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
            <Issuer>Issuer</Issuer>
            <AlgorithmParameters>
                <ResponseFormat Length="8" Encoding="DECIMAL"/>
            </AlgorithmParameters>
            <Data>
                <Secret>
                    <EncryptedValue>
                        <xenc:EncryptionMethod
            Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
                        <xenc:CipherData>
                            <xenc:CipherValue>
    {SECRET_CIPHER}
                            </xenc:CipherValue>
                        </xenc:CipherData>
                    </EncryptedValue>
                    <ValueMAC>{VALUE_MAC}
                    </ValueMAC>
                </Secret>
                <Counter>
                    <PlainValue>0</PlainValue>
                </Counter>
            </Data>
        </Key>
    </KeyPackage>
</KeyContainer>
"""


def _refused(data: bytes | str, key: bytes | None = None) -> str:
    with pytest.raises(OathImportError) as caught:
        parse_pskc(data.encode() if isinstance(data, str) else data, key)
    return str(caught.value)


# The RFC's examples


def test_figure_2_is_refused_for_its_32_bit_secret() -> None:
    assert _refused(FIGURE_2) == (
        "KeyPackage 1/Key/Data/Secret: seed is 32 bits; at least 128 bits are needed "
        "(160 recommended)"
    )


def test_figure_2_with_a_real_seed_takes_its_serial_from_the_key_id() -> None:
    data = FIGURE_2.replace(b"MTIzNA==", base64.b64encode(SECRET))
    assert parse_pskc(data, None) == [
        ImportedToken("12345678", SECRET, TokenParams("hotp", "sha1", 6), 0, issuer="Issuer-A")
    ]


def test_figure_3_plain_secret_with_supplementary_data() -> None:
    assert parse_pskc(FIGURE_3, None) == [
        ImportedToken("987654321", SECRET, TokenParams("hotp", "sha1", 8), 0, issuer="Issuer")
    ]
    # the pre-shared key is not needed and does no harm
    assert parse_pskc(FIGURE_3, PSK)[0].secret == SECRET


def test_figure_6_decrypts_with_the_pre_shared_key() -> None:
    assert parse_pskc(FIGURE_6.encode(), PSK) == [
        ImportedToken("987654321", SECRET, TokenParams("hotp", "sha1", 8), 0, issuer="Issuer")
    ]


def test_figure_6_values_are_what_the_rfc_says() -> None:
    """Independently of the importer: the MAC key, the IV and the MAC over IV + ciphertext."""
    mac_key_blob = base64.b64decode(MAC_KEY_CIPHER)
    assert _cbc_decrypt(PSK, mac_key_blob) == MAC_KEY
    secret_blob = base64.b64decode(SECRET_CIPHER)
    assert secret_blob[:16] == bytes(range(16))
    assert _cbc_decrypt(PSK, secret_blob) == SECRET
    assert hmac.digest(MAC_KEY, secret_blob, "sha1") == base64.b64decode(VALUE_MAC)


def test_figure_6_with_one_mac_byte_changed_is_refused() -> None:
    mac = bytearray(base64.b64decode(VALUE_MAC))
    mac[7] ^= 0x01
    altered = FIGURE_6.replace(VALUE_MAC, base64.b64encode(bytes(mac)).decode())
    assert altered != FIGURE_6
    assert _refused(altered, PSK) == (
        "KeyPackage 1/Key/Data/Secret: MAC does not match: the file was altered or the "
        "pre-shared key is wrong; nothing was imported"
    )


def test_figure_6_with_an_altered_ciphertext_is_refused() -> None:
    blob = bytearray(base64.b64decode(SECRET_CIPHER))
    blob[20] ^= 0x80
    altered = FIGURE_6.replace(SECRET_CIPHER, base64.b64encode(bytes(blob)).decode())
    assert "KeyPackage 1/Key/Data/Secret: MAC does not match" in _refused(altered, PSK)


def test_figure_6_needs_the_right_pre_shared_key() -> None:
    assert _refused(FIGURE_6, None) == (
        "KeyPackage 1/Key/Data/Secret: is encrypted; the pre-shared key named "
        "'Pre-shared-key' is needed to import this file"
    )
    wrong = bytes.fromhex("00000000000000000000000000000000")
    assert "pre-shared key" in _refused(FIGURE_6, wrong)
    assert _refused(FIGURE_6, PSK + PSK) == (
        "MACMethod/MACKey/EncryptionMethod: aes128-cbc needs a 16-byte key; "
        "the pre-shared key is 32 bytes"
    )


# Protected files built here, several keys per file


def _cbc_encrypt(key: bytes, plain: bytes, iv: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(padded) + encryptor.finalize()


def _cbc_decrypt(key: bytes, blob: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.CBC(blob[:16])).decryptor()
    padded = decryptor.update(blob[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def _encrypted(value: bytes, iv: int, key: bytes = PSK, mac_key: bytes = MAC_KEY) -> str:
    blob = _cbc_encrypt(key, value, bytes([iv]) * 16)
    mac = base64.b64encode(hmac.digest(mac_key, blob, "sha1")).decode()
    return f"""<EncryptedValue>
        <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
        <xenc:CipherData><xenc:CipherValue>{base64.b64encode(blob).decode()}</xenc:CipherValue>
        </xenc:CipherData></EncryptedValue><ValueMAC>{mac}</ValueMAC>"""


def _container(packages: str, mac_key_element: str | None = None) -> str:
    if mac_key_element is None:
        blob = base64.b64encode(_cbc_encrypt(PSK, MAC_KEY, b"\x42" * 16)).decode()
        mac_key_element = f"""<MACKey>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData><xenc:CipherValue>{blob}</xenc:CipherValue></xenc:CipherData>
        </MACKey>"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
  <EncryptionKey><ds:KeyName>vendor-2026</ds:KeyName></EncryptionKey>
  <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">{mac_key_element}</MACMethod>
  {packages}
</KeyContainer>"""


SEED_A = bytes.fromhex("00112233445566778899aabbccddeeff00112233")
SEED_B = bytes(range(32))
SEED_C = bytes(range(100, 164))


def _three_packages(mac_key: bytes = MAC_KEY) -> list[str]:
    return [
        f"""<KeyPackage><DeviceInfo><SerialNo>HOTP-1</SerialNo></DeviceInfo>
  <Key Id="k1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
    <AlgorithmParameters><ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>
    <Data><Secret>{_encrypted(SEED_A, 1, mac_key=mac_key)}</Secret>
      <Counter>{_encrypted((300).to_bytes(8, "big"), 2, mac_key=mac_key)}</Counter></Data>
  </Key></KeyPackage>""",
        f"""<KeyPackage><DeviceInfo><SerialNo>TOTP-2</SerialNo></DeviceInfo>
  <Key Id="k2" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
    <Issuer>Example</Issuer>
    <AlgorithmParameters><Suffix>SHA256</Suffix><ResponseFormat Length="8"/></AlgorithmParameters>
    <Data><Secret>{_encrypted(SEED_B, 3, mac_key=mac_key)}</Secret>
      <Time><PlainValue>0</PlainValue></Time>
      <TimeInterval><PlainValue>60</PlainValue></TimeInterval></Data>
  </Key></KeyPackage>""",
        f"""<KeyPackage><DeviceInfo><SerialNo>TOTP-3</SerialNo></DeviceInfo>
  <Key Id="k3" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc#totp-sha512">
    <Data><Secret>{_encrypted(SEED_C, 4, mac_key=mac_key)}</Secret></Data>
  </Key></KeyPackage>""",
    ]


EXPECTED = [
    ImportedToken("HOTP-1", SEED_A, TokenParams("hotp", "sha1", 6), 300),
    ImportedToken("TOTP-2", SEED_B, TokenParams("totp", "sha256", 8, 60), 0, issuer="Example"),
    ImportedToken("TOTP-3", SEED_C, TokenParams("totp", "sha512", 6, 30), 0),
]


def test_a_protected_file_with_several_keys() -> None:
    assert parse_pskc(_container("".join(_three_packages())).encode(), PSK) == EXPECTED


def test_one_wrong_mac_refuses_the_whole_file() -> None:
    packages = _three_packages()
    mac = re.findall(r"<ValueMAC>([^<]+)</ValueMAC>", packages[1])[0]
    changed = bytearray(base64.b64decode(mac))
    changed[0] ^= 0xFF
    packages[1] = packages[1].replace(mac, base64.b64encode(bytes(changed)).decode())
    message = _refused(_container("".join(packages)), PSK)
    assert message.startswith("KeyPackage 2/Key/Data/Secret: MAC does not match")


def test_a_wrong_mac_on_a_counter_refuses_the_file() -> None:
    packages = _three_packages()
    macs = re.findall(r"<ValueMAC>([^<]+)</ValueMAC>", packages[0])
    packages[0] = packages[0].replace(macs[1], macs[0])  # the secret's MAC on the counter
    assert _refused(_container("".join(packages)), PSK).startswith(
        "KeyPackage 1/Key/Data/Counter: MAC does not match"
    )


def test_without_a_mac_key_the_pre_shared_key_authenticates() -> None:
    packages = "".join(_three_packages(mac_key=PSK))
    assert parse_pskc(_container(packages, mac_key_element="").encode(), PSK) == EXPECTED
    # and values MACed with another key are then refused
    assert "MAC does not match" in _refused(
        _container("".join(_three_packages()), mac_key_element=""), PSK
    )


def test_an_encrypted_value_without_a_mac_is_refused() -> None:
    packages = re.sub(r"<ValueMAC>[^<]+</ValueMAC>", "", _three_packages()[0])
    assert _refused(_container(packages), PSK) == (
        "KeyPackage 1/Key/Data/Secret: is encrypted without a ValueMAC: a value that cannot be "
        "checked is refused"
    )


def test_an_encrypted_value_without_a_mac_method_is_refused() -> None:
    document = re.sub(r"<MACMethod.*</MACMethod>", "", _container(_three_packages()[0]), flags=re.S)
    assert _refused(document, PSK) == (
        "MACMethod: missing: encrypted values need a MAC to be checked"
    )


def test_an_unsupported_mac_algorithm_is_named() -> None:
    document = _container(_three_packages()[0]).replace(
        "http://www.w3.org/2000/09/xmldsig#hmac-sha1", "http://example.test/hmac-md5"
    )
    assert _refused(document, PSK) == (
        "MACMethod: Algorithm http://example.test/hmac-md5 is not supported"
    )


def test_a_passphrase_protected_file_is_refused_clearly() -> None:
    document = _container(_three_packages()[0]).replace(
        "<ds:KeyName>vendor-2026</ds:KeyName>",
        '<DerivedKey xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>',
    )
    assert _refused(document, PSK) == (
        "EncryptionKey: only a pre-shared key (ds:KeyName) is supported; EncryptionKey has "
        "DerivedKey"
    )


# Refused documents name the element

_PLAIN = base64.b64encode(SECRET).decode()
HOTP = "urn:ietf:params:xml:ns:keyprov:pskc:hotp"


def _plain(key: str = "", package_extra: str = "", data_extra: str = "",
           algorithm: str = "urn:ietf:params:xml:ns:keyprov:pskc:totp") -> str:  # fmt: skip
    return f"""<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>{package_extra}<DeviceInfo><SerialNo>S1</SerialNo></DeviceInfo>
    <Key Id="k" Algorithm="{algorithm}">{key}
      <Data><Secret><PlainValue>{_PLAIN}</PlainValue></Secret>{data_extra}</Data>
    </Key></KeyPackage></KeyContainer>"""


def test_a_minimal_plain_totp_file() -> None:
    assert parse_pskc(_plain().encode(), None) == [
        ImportedToken("S1", SECRET, TokenParams("totp", "sha1", 6, 30))
    ]


def test_a_counter_counts_for_hotp_only() -> None:
    counter = "<Counter><PlainValue>12</PlainValue></Counter>"
    assert parse_pskc(_plain(data_extra=counter, algorithm=HOTP).encode(), None)[0].counter == 12
    assert parse_pskc(_plain(data_extra=counter).encode(), None)[0].counter == 0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not xml", "XML: not well-formed: syntax error: line 1, column 0"),
        (
            '<!DOCTYPE x [<!ENTITY a "aaaa">]><KeyContainer>&a;</KeyContainer>',
            "XML: a DOCTYPE is not allowed in a PSKC file",
        ),
        (
            "<KeyContainer/>",
            "KeyContainer: not a PSKC key container (the root element is KeyContainer in no "
            "namespace; expected KeyContainer in urn:ietf:params:xml:ns:keyprov:pskc)",
        ),
        (
            '<KeyContainer xmlns="urn:ietf:params:xml:ns:keyprov:pskc:1.0"/>',
            "KeyContainer: not a PSKC key container (the root element is KeyContainer in "
            "namespace urn:ietf:params:xml:ns:keyprov:pskc:1.0; expected KeyContainer in "
            "urn:ietf:params:xml:ns:keyprov:pskc)",
        ),
        (
            '<KeyContainer Version="2.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>',
            "KeyContainer: Version '2.0' is not supported (1.0 is)",
        ),
        (
            '<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>',
            "KeyContainer: has no KeyPackage",
        ),
        (
            _plain(algorithm="urn:ietf:params:xml:ns:keyprov:pskc:pin"),
            "KeyPackage 1/Key: Algorithm urn:ietf:params:xml:ns:keyprov:pskc:pin is not HOTP "
            "or TOTP",
        ),
        (
            _plain('<AlgorithmParameters><ResponseFormat Length="7"/></AlgorithmParameters>'),
            "KeyPackage 1/Key/AlgorithmParameters/ResponseFormat Length: must be 6 or 8, not '7'",
        ),
        (
            _plain(
                '<AlgorithmParameters><ResponseFormat Length="8" Encoding="HEXADECIMAL"/>'
                "</AlgorithmParameters>"
            ),
            "KeyPackage 1/Key/AlgorithmParameters/ResponseFormat: Encoding HEXADECIMAL is not "
            "supported (DECIMAL is)",
        ),
        (
            _plain("<AlgorithmParameters><Suffix>MD5</Suffix></AlgorithmParameters>"),
            "KeyPackage 1/Key/AlgorithmParameters/Suffix: 'MD5' is not SHA1, SHA256 or SHA512",
        ),
        (
            _plain(
                "<AlgorithmParameters><Suffix>SHA256</Suffix></AlgorithmParameters>",
                algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp-sha512",
            ),
            "KeyPackage 1/Key/AlgorithmParameters/Suffix: SHA256 contradicts the Algorithm URN",
        ),
        (
            _plain(data_extra="<TimeInterval><PlainValue>45</PlainValue></TimeInterval>"),
            "KeyPackage 1/Key/Data/TimeInterval: must be 30 or 60 (seconds), not 45",
        ),
        (
            _plain(data_extra="<Time><PlainValue>1000</PlainValue></Time>"),
            "KeyPackage 1/Key/Data/Time: only T0 = 0 (the Unix epoch) is supported",
        ),
        (
            _plain(data_extra="<Counter><PlainValue>-3</PlainValue></Counter>", algorithm=HOTP),
            "KeyPackage 1/Key/Data/Counter/PlainValue: not a non-negative integer: '-3'",
        ),
        (
            _plain(data_extra="<Counter/>", algorithm=HOTP),
            "KeyPackage 1/Key/Data/Counter: has neither PlainValue nor EncryptedValue",
        ),
        (
            _plain().replace(_PLAIN, "not*base64"),
            "KeyPackage 1/Key/Data/Secret/PlainValue: not base64",
        ),
        (
            _plain()
            .replace("<DeviceInfo><SerialNo>S1</SerialNo></DeviceInfo>", "")
            .replace('Id="k" ', ""),
            "KeyPackage 1: has no DeviceInfo/SerialNo and its Key no Id: no serial to give it",
        ),
        (
            _plain().replace("</KeyContainer>", _plain().split(">", 1)[1]),
            "KeyPackage 2: serial 'S1' is also KeyPackage 1's",
        ),
        (
            _plain().replace("<Key ", "<Key/><Key "),
            "KeyPackage 1: has 2 Key elements; one is expected",
        ),
    ],
)
def test_refusals_name_the_element(document: str, message: str) -> None:
    assert _refused(document) == message
