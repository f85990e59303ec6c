"""The settings module decides endpoints; the app's only credential is its managed identity, and the local
stack's own credential (emulators/core/local_identity.py, for identities that are not the app) never leaves loopback."""

from __future__ import annotations

import base64
import json

import pytest

from activities.clients import credential
from emulators.core.local_identity import LocalTokenCredential
from rotation.settings import PUBLIC_ARM, PUBLIC_LOGS, SETTING_NAMES, SettingsError, load_settings

LOCAL = {
    "ARM_ENDPOINT": "https://127.0.0.1:8443",
    "LOGS_ENDPOINT": "https://localhost:8443",
    "EVENTGRID_TOPIC_ENDPOINT": "https://127.0.0.1:8443/api/events",
}


def test_azure_defaults_use_public_endpoints_and_managed_identity() -> None:
    cfg = load_settings({"AZURE_CLIENT_ID": "abc"})
    assert (cfg.arm_endpoint, cfg.logs_endpoint) == (PUBLIC_ARM, PUBLIC_LOGS)
    assert type(credential(cfg)).__name__ == "ManagedIdentityCredential"


def test_local_endpoints_get_the_same_managed_identity_credential() -> None:
    cfg = load_settings({**LOCAL, "AZURE_CLIENT_ID": "abc"})
    assert type(credential(cfg)).__name__ == "ManagedIdentityCredential"
    assert not {"KEYROTATION_CREDENTIAL", "KEYROTATION_CA_BUNDLE", "KEYROTATION_LOCAL_IDENTITY"} & set(SETTING_NAMES)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"ARM_ENDPOINT": "http://127.0.0.1:8443"}, "ARM_ENDPOINT"),
        ({"LOGS_ENDPOINT": "http://api.loganalytics.io"}, "LOGS_ENDPOINT"),
        ({"EVENTGRID_TOPIC_ENDPOINT": "ftp://t.westus-1.eventgrid.azure.net/api/events"}, "EVENTGRID_TOPIC_ENDPOINT"),
        ({"KEYROTATION_CREDENTIAL": "loopback-token"}, "KEYROTATION_CREDENTIAL"),
        ({"KEYROTATION_CA_BUNDLE": "/tmp/ca.pem"}, "KEYROTATION_CA_BUNDLE"),
        ({"KEYROTATION_LOCAL_IDENTITY": "00000000-0000-0000-0000-00000000a11e"}, "KEYROTATION_LOCAL_IDENTITY"),
    ],
)
def test_plain_http_and_removed_local_settings_are_refused(override: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({**LOCAL, **override})


def test_an_earlier_deployments_credential_setting_is_accepted() -> None:
    assert load_settings({"KEYROTATION_CREDENTIAL": "managed-identity"}).arm_endpoint == PUBLIC_ARM


def test_local_tokens_name_audience_and_caller() -> None:
    minted = LocalTokenCredential("oid-1", "consumer-a", endpoint="https://127.0.0.1:8443")
    token = minted.get_token("https://vault.azure.net/.default").token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == "https://vault.azure.net"
    assert (claims["oid"], claims["name"]) == ("oid-1", "consumer-a")


@pytest.mark.parametrize("endpoint", ["https://prod-vault.vault.azure.net", "https://10.0.0.4", "https://[::2]"])
def test_local_tokens_are_refused_for_anything_but_loopback(endpoint: str) -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        LocalTokenCredential("oid-1", "consumer-a", endpoint=endpoint)
