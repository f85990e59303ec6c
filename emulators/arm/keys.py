"""Functions key values as the host makes them: identifiable secrets (40 random bytes, URL-safe base64).

The host generates keys with Microsoft.Security.Utilities' `GenerateUrlSafeBase64Key(seed, 40, "AzFu")`:
random bytes, the `AzFu` signature at a fixed base64 position, and a Marvin32 checksum keyed by a seed
per key kind, padding kept (56 characters ending in `==`). Secret scanners recognise that shape, so the
emulator generates the same one; in the host's strict mode a supplied value must carry it too.
"""

from __future__ import annotations

import base64
import re
import secrets
import struct

SIGNATURE = "AzFu"
MASTER_SEED = 0x4D61737465723030
SYSTEM_SEED = 0x53797374656D3030
FUNCTION_SEED = 0x46756E6374693030
KEY_BYTES = 40
GENERATED_LENGTH = 56

# What the emulator accepts as a supplied value (Azure does not document its rule; see docs/emulators.md).
MIN_VALUE_LENGTH = 32
MAX_VALUE_LENGTH = 1024
VALUE_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+=*$")

_M32 = 0xFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & _M32


def _block(p0: int, p1: int) -> tuple[int, int]:
    p1 ^= p0
    p0 = _rotl(p0, 20)
    p0 = (p0 + p1) & _M32
    p1 = _rotl(p1, 9)
    p1 ^= p0
    p0 = _rotl(p0, 27)
    p0 = (p0 + p1) & _M32
    p1 = _rotl(p1, 19)
    return p0, p1


def marvin64(data: bytes, seed: int) -> int:
    """Marvin32's 64-bit state after hashing `data` (SymCrypt's reference algorithm)."""
    p0, p1 = seed & _M32, (seed >> 32) & _M32
    whole = len(data) - len(data) % 4
    for (word,) in struct.iter_unpack("<I", data[:whole]):
        p0 = (p0 + word) & _M32
        p0, p1 = _block(p0, p1)
    tail = data[whole:]
    final = 0x80 << (8 * len(tail))
    for index, byte in enumerate(tail):
        final |= byte << (8 * index)
    p0 = (p0 + (final & _M32)) & _M32
    p0, p1 = _block(p0, p1)
    p0, p1 = _block(p0, p1)
    return (p1 << 32) | p0


def marvin32(data: bytes, seed: int) -> int:
    """The 32-bit checksum (high xor low half) the identifiable-secret format stores, unsigned."""
    full = marvin64(data, seed)
    return ((full >> 32) ^ full) & _M32


def generate(seed: int = FUNCTION_SEED) -> str:
    """A new key value shaped like the host's: 56 URL-safe base64 characters with AzFu and a checksum."""
    raw = bytearray(secrets.token_bytes(KEY_BYTES))
    # 33 random bytes encode to exactly 44 characters, so the 3 signature bytes render as "AzFu".
    raw[33:36] = base64.b64decode(SIGNATURE)
    raw[36:40] = struct.pack("<I", marvin32(bytes(raw[:36]), seed))
    return base64.urlsafe_b64encode(bytes(raw)).decode()


def is_identifiable(value: str, seed: int) -> bool:
    """The host's strict-mode check: URL-safe alphabet, valid checksum for `seed`, AzFu before it."""
    if "+" in value or "/" in value:
        return False
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return False
    if len(raw) < 8 or struct.unpack("<I", raw[-4:])[0] != marvin32(raw[:-4], seed):
        return False
    body = value.rstrip("=")
    return body[-6 - len(SIGNATURE) : -6] == SIGNATURE


def value_problem(value: str) -> str | None:
    """Why a supplied key value is refused, or None when it is acceptable."""
    if not (MIN_VALUE_LENGTH <= len(value) <= MAX_VALUE_LENGTH):
        return f"Key value must be between {MIN_VALUE_LENGTH} and {MAX_VALUE_LENGTH} characters long."
    if not VALUE_PATTERN.match(value):
        return "Key value may contain only letters, digits, '-', '_' and trailing '=' padding."
    return None
