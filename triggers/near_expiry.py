"""What a `Microsoft.KeyVault.SecretNearExpiry` event may say before it starts a rotation (issue 12).

Anyone holding the `eventgrid_extension` system key can post such an event, so its data is input like
any other: `ObjectName` must be a Key Vault secret name, `VaultName` a vault name, and the pair must be a
target the policy names; `Version` must be a Key Vault version id (32 hex characters). The fields are
those of the data object in Microsoft's "Azure Key Vault as Event Grid source" page (MicrosoftDocs/
azure-docs `articles/event-grid/event-schema-key-vault.md`: Id, VaultName, ObjectType, ObjectName,
Version, NBF, EXP). That page's example shows `"Version": " ee059b2b…"` with a leading space, so
surrounding spaces are tolerated and dropped; nothing else is.

An event that fails is dropped with a log line that names the field, never its value. It cannot be
refused per event: the Event Grid trigger answers for the whole delivery, 202 when every invocation
succeeded and 500 when one failed, which makes Event Grid send the whole batch again
(Azure/azure-sdk-for-net `Microsoft.Azure.WebJobs.Extensions.EventGrid`,
`EventGridExtensionConfigProvider.ProcessEventsAsync`) on its retry schedule (learn.microsoft.com
"Event Grid message delivery and retry"). Raising would replay a forged event for a day; returning drops it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rotation.policy import Policy, Target
from rotation.reasons import MAX_REASON, clean_text
from rotation.redaction import looks_secret

# Key Vault secret names: 1-127 letters, digits and dashes (as config/rotation-policy.schema.json). A vault
# name is held to the same shape only; what matters is that it equals the policy target's vault name (the
# first label of its URL — "127" for the local emulator's 127.0.0.1, which Azure's own rules would refuse).
SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
VAULT_NAME = SECRET_NAME
VERSION = re.compile(r"^ *([0-9a-fA-F]{32}) *$")
EVENT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,127}$")


@dataclass(frozen=True)
class NearExpiry:
    """A near-expiry event that names a scheduled target of the policy."""

    target: Target
    secret_name: str
    version: str

    @property
    def reason(self) -> str:
        text = f"Key Vault reported version {self.version} of {self.secret_name} near expiry"
        return clean_text(text, MAX_REASON)


def shown(name: str, shape: re.Pattern[str] = SECRET_NAME) -> str:
    """A name from the event, fit for a log line: only when it has the plain shape it should have."""
    return name if shape.match(name) and not looks_secret(name) else "(a name not shown)"


def read_near_expiry(policy: Policy, data: Any) -> tuple[NearExpiry | None, str]:
    """(the event, "") when it may start a rotation; else (None, why it is dropped, without its values)."""
    if not isinstance(data, dict):
        return None, "its data is not an object"
    secret_name, vault_name, version = data.get("ObjectName"), data.get("VaultName"), data.get("Version")
    if not isinstance(secret_name, str) or not SECRET_NAME.match(secret_name):
        return None, "data.ObjectName is not a Key Vault secret name"
    if not isinstance(vault_name, str) or not VAULT_NAME.match(vault_name):
        return None, "data.VaultName is not a Key Vault name"
    matched = VERSION.match(version) if isinstance(version, str) else None
    if matched is None:
        return None, "data.Version is not a Key Vault version (32 hex characters)"
    target = policy.target_for_secret(secret_name, vault_name)
    if target is None:
        return None, f"secret {shown(secret_name)} of vault {shown(vault_name)} is not in the policy"
    if not target.schedulable:
        return None, f"secret {shown(secret_name)} belongs to {target.id}, which is not a scheduled target"
    return NearExpiry(target, target.key_vault.secret_name, matched.group(1).lower()), ""
