"""The credential store contract: a value never prints itself, and an implementation of the protocol is
recognised (other credential kinds plug in behind the same interface)."""

from __future__ import annotations

import json
import logging
import pickle

import pytest

from rotation.credential_store import CreateResult, CredentialStore, ProbeResult, SecretValue

VALUE = "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmE="


def test_a_secret_value_does_not_print_itself(caplog: pytest.LogCaptureFixture) -> None:
    secret = SecretValue(VALUE)
    rendered = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        "%s" % secret,  # noqa: UP031 - what logging does
        str([secret]),
        str({"k": secret}),
    ]
    assert all(VALUE not in text and "***" in text for text in rendered)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("value %s", secret)
    assert VALUE not in caplog.text
    assert secret.reveal() == VALUE


def test_a_secret_value_cannot_be_serialized_into_history_or_responses() -> None:
    secret = SecretValue(VALUE)
    with pytest.raises(TypeError):
        json.dumps({"value": secret})
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_secret_values_compare_by_value_and_refuse_empty() -> None:
    assert SecretValue(VALUE) == SecretValue(VALUE) and SecretValue(VALUE) != SecretValue(VALUE + "x")
    with pytest.raises(ValueError):
        SecretValue("")


class InMemoryStore:
    """A minimal dual-credential store, as a future kind (e.g. storage account keys) would provide."""

    kind = "in-memory"
    supports_overlap = True

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.accepted: set[str] = set()

    def create(self, name: str) -> CreateResult:
        if name.lower() in (n.lower() for n in self.values):
            return CreateResult(name, created=False)
        self.values[name] = f"generated-{len(self.values)}"
        self.accepted.add(self.values[name])
        return CreateResult(name, created=True)

    def list_names(self) -> list[str]:
        return sorted(self.values)

    def read_value(self, name: str) -> SecretValue | None:
        value = self.values.get(name)
        return SecretValue(value) if value else None

    def delete(self, name: str) -> bool:
        value = self.values.pop(name, None)
        self.accepted.discard(value or "")
        return value is not None

    def renew(self, name: str) -> None:
        raise ValueError("a kind with overlap is never renewed in place")

    def probe(self, value: SecretValue) -> ProbeResult:
        ok = value.reveal() in self.accepted
        return ProbeResult(ok, 200 if ok else 401)


def test_an_implementation_satisfies_the_protocol_and_its_idempotency_rules() -> None:
    store = InMemoryStore()
    assert isinstance(store, CredentialStore)
    assert store.create("k1") == CreateResult("k1", True)
    value = store.read_value("k1")
    assert store.create("K1") == CreateResult("K1", False)  # a re-run does not regenerate
    assert store.read_value("k1") == value
    assert value is not None and store.probe(value).accepted
    assert store.delete("k1") is True and store.delete("k1") is False  # already gone is success
    assert not store.probe(value).accepted
    assert not isinstance(object(), CredentialStore)
