"""The settings module decides endpoints and the credential; the loopback credential never leaves loopback."""

from __future__ import annotations

import base64
import json

import pytest

from activities.clients import LoopbackTokenCredential, credential, secret_client
from rotation.settings import PUBLIC_ARM, PUBLIC_LOGS, SettingsError, load_settings

LOCAL = {
    "KEYROTATION_CREDENTIAL": "loopback-token",
    "ARM_ENDPOINT": "https://127.0.0.1:8443",
    "LOGS_ENDPOINT": "https://localhost:8443",
    "EVENTGRID_TOPIC_ENDPOINT": "https://127.0.0.1:8443/api/events",
}


def test_azure_defaults_use_public_endpoints_and_managed_identity() -> None:
    cfg = load_settings({"AZURE_CLIENT_ID": "abc"})
    assert cfg.credential_kind == "managed-identity"
    assert (cfg.arm_endpoint, cfg.logs_endpoint) == (PUBLIC_ARM, PUBLIC_LOGS)
    assert type(credential(cfg)).__name__ == "ManagedIdentityCredential"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"ARM_ENDPOINT": "https://management.azure.com"}, "ARM_ENDPOINT"),
        ({"LOGS_ENDPOINT": "https://api.loganalytics.io"}, "LOGS_ENDPOINT"),
        ({"EVENTGRID_TOPIC_ENDPOINT": "https://t.westus-1.eventgrid.azure.net/api/events"}, "EVENTGRID_TOPIC_ENDPOINT"),
        ({"ARM_ENDPOINT": "http://127.0.0.1:8443"}, "ARM_ENDPOINT"),
        ({"KEYROTATION_CREDENTIAL": "client-secret"}, "KEYROTATION_CREDENTIAL"),
    ],
)
def test_loopback_credential_is_refused_for_anything_but_local_https(override: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({**LOCAL, **override})


def test_ca_bundle_only_with_the_loopback_credential() -> None:
    with pytest.raises(SettingsError, match="KEYROTATION_CA_BUNDLE"):
        load_settings({"KEYROTATION_CA_BUNDLE": "/tmp/ca.pem"})


def test_vault_outside_loopback_is_refused_under_the_loopback_credential() -> None:
    cfg = load_settings(LOCAL)
    with pytest.raises(SettingsError, match="Key Vault URL"):
        secret_client("https://prod-vault.vault.azure.net", cfg)


def test_loopback_token_names_audience_and_caller() -> None:
    token = LoopbackTokenCredential("oid-1", "consumer-a").get_token("https://vault.azure.net/.default").token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == "https://vault.azure.net"
    assert (claims["oid"], claims["name"]) == ("oid-1", "consumer-a")
