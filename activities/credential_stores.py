"""The one place an activity gets a target's credential store (rotation.credential_store.CredentialStore).

Activities decide nothing about credentials themselves (rotation.key_plan does, purely) and know no store
class: they call credential_store_for(target) and use only the interface. Another credential kind with the
same dual-credential shape (storage account keys, Event Grid topic keys, Cosmos DB keys) is an adapter
module beside function_keys.py plus one branch here; no activity or orchestration changes.
"""

from __future__ import annotations

from typing import Any

from activities.function_keys import FunctionKeyStore
from rotation.credential_store import CredentialStore
from rotation.policy import Target


def credential_store_for(target: Target, client: Any = None) -> CredentialStore:
    """The store of `target`'s credentials. `client`: the kind's SDK client, for a caller that builds
    clients up front to share them across threads (the client factory is not meant for threads); None
    builds one on first use through activities/clients.py. Every policy target today holds Functions keys
    (host, function or master key scope), so this is the Functions-keys store."""
    return FunctionKeyStore(target, client)
