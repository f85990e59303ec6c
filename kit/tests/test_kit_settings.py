"""Settings that would send a token where it must not go are refused, and nothing the kit says — logs,
exceptions, reprs, its state — carries a key value."""

from __future__ import annotations

import logging

import pytest
from keyrotation_kit import KeyVaultError, SecretVersion, SettingsError, load_settings
from kit_fakes import AZURE_FREE, LOCAL, R1, R2, A, B, Clock, FakeTarget, FakeVault, announcement, make_kit, value_of


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"CONSUMER_KEY_VAULT_URL": "https://kv-orders.vault.azure.net"}, "CONSUMER_KEY_VAULT_URL"),
        ({"KEYROTATION_API_URL": "http://keyrotation.example.com"}, "KEYROTATION_API_URL"),
        ({"CONSUMER_TARGET_URL": "https://orders.azurewebsites.net/api/ping"}, "CONSUMER_TARGET_URL"),
        ({"KEYROTATION_API_TOKEN": ""}, "KEYROTATION_API_TOKEN"),
        ({"CONSUMER_OBJECT_ID": "billing-worker"}, "CONSUMER_OBJECT_ID"),
        ({"CONSUMER_TARGET_ID": "Orders API"}, "CONSUMER_TARGET_ID"),
        ({"CONSUMER_REFRESH_SECONDS": "soon"}, "CONSUMER_REFRESH_SECONDS"),
    ],
)
def test_local_settings_that_would_leak_a_token_or_are_malformed_are_refused(
    overrides: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({**LOCAL, **overrides})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"KEYROTATION_API_TOKEN": "static"}, "KEYROTATION_API_TOKEN"),
        ({"CONSUMER_CA_BUNDLE": "/tmp/ca.pem"}, "CONSUMER_CA_BUNDLE"),
        ({"KEYROTATION_API_AUDIENCE": ""}, "KEYROTATION_API_AUDIENCE"),
        ({"KEYROTATION_API_URL": "http://127.0.0.1:7071"}, "KEYROTATION_API_URL"),
        ({"CONSUMER_CREDENTIAL": "client-secret"}, "CONSUMER_CREDENTIAL"),
    ],
)
def test_azure_settings_use_the_managed_identity_only(overrides: dict[str, str], named: str) -> None:
    assert load_settings(AZURE_FREE).credential_kind == "managed-identity"
    with pytest.raises(SettingsError, match=named):
        load_settings({**AZURE_FREE, **overrides})


def test_no_key_value_in_logs_exceptions_reprs_or_state(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock, vault, target = Clock(), FakeVault({A: R1}), FakeTarget({A})
    kit = make_kit(vault, clock=clock)
    kit.call(target.send, status=int)
    vault.write(B, R2)
    kit.handle_event(announcement(B, R2, "2026-04-01T03:00:05.000Z"))
    target.live = {B}
    kit.call(target.send, status=int)
    kit.acks.flush()
    vault.down = True
    clock.now += 60
    kit.refresher.refresh("periodic")
    with pytest.raises(KeyVaultError) as failure:
        kit.handle_event(announcement("c" * 32, "orders-api-20260501t030000z-s", "2026-05-01T03:00:05.000Z"))
    held = kit.key()
    said = " ".join(
        [
            caplog.text,
            str(failure.value),
            repr(kit),
            repr(held),
            repr(SecretVersion("id", A, value_of(A))),
            str(kit.state()),
        ]
    )
    said += repr(kit.settings)
    for version in (A, B):
        assert value_of(version) not in said
    assert "devhost-token" not in said
    assert held.fingerprint in caplog.text  # what the logs say instead
