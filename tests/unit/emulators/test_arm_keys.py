"""Key values shaped like the Functions host's identifiable secrets (Marvin32 checksum, AzFu signature)."""

from __future__ import annotations

import base64

from emulators.arm import keys as arm_keys


def test_marvin_matches_the_symcrypt_reference_vectors() -> None:
    assert arm_keys.marvin64(b"abc", 0xD53CD9CECD0893B7) == 0x22C74339492769BF
    assert arm_keys.marvin64(b"abcdefghijklmnopqrstuvwxyz", 0xDDDDEEEEFFFF000) == 0xA128EB7E7260ACA2
    assert arm_keys.marvin64(b"", 0x004FB61A001BDBCC) == 0x30ED35C100CD3C7D
    assert arm_keys.marvin64(b"\x37\xf4\x95", 0x004FB61A001BDBCC) == 0xF0B07C789B8CF7E8


def test_generated_values_have_the_host_shape_and_their_kind() -> None:
    values = {arm_keys.generate(arm_keys.FUNCTION_SEED) for _ in range(50)}
    assert len(values) == 50
    for value in values:
        assert len(value) == arm_keys.GENERATED_LENGTH and value.endswith("==") and value[44:48] == "AzFu"
        assert arm_keys.is_identifiable(value, arm_keys.FUNCTION_SEED)
        assert not arm_keys.is_identifiable(value, arm_keys.MASTER_SEED)
        assert arm_keys.value_problem(value) is None
    master = arm_keys.generate(arm_keys.MASTER_SEED)
    assert arm_keys.is_identifiable(master, arm_keys.MASTER_SEED)


def test_tampered_or_foreign_values_are_not_identifiable() -> None:
    value = arm_keys.generate()
    flipped = ("B" if value[0] == "A" else "A") + value[1:]
    assert not arm_keys.is_identifiable(flipped, arm_keys.FUNCTION_SEED)
    assert not arm_keys.is_identifiable(base64.urlsafe_b64encode(bytes(40)).decode(), arm_keys.FUNCTION_SEED)
    assert not arm_keys.is_identifiable(value.replace("-", "+").replace("_", "/"), arm_keys.FUNCTION_SEED) or (
        "-" not in value and "_" not in value
    )
    assert not arm_keys.is_identifiable("not base64 at all!", arm_keys.FUNCTION_SEED)


def test_supplied_value_rules() -> None:
    assert arm_keys.value_problem("a" * 31) is not None
    assert arm_keys.value_problem("a" * 32) is None
    assert arm_keys.value_problem("a" * 30 + "==") is None
    assert arm_keys.value_problem("a" * 40 + " b") is not None
    assert arm_keys.value_problem("a" * 20 + "=" + "a" * 20) is not None
