"""Functions keys as a credential store (rotation.credential_store.CredentialStore) over ARM.

One store is one target's key scope on one app or slot: the host's `functionKeys`, one function's keys,
or the master key. Calls go through WebSiteManagementClient (built only by activities/clients.py) with
the quirks of azure-wire.md handled here: PUT bodies are plain dicts with `properties` and no value
(quirk 1 and 2: Functions generates the value), values are read back with listkeys, deletes answer 204
and a 404 means the key is already gone (quirk 3).

A listing is cached on the store until the next write, so a step that lists, creates and reads back
costs three ARM calls, not five (DESIGN budget: at most 4 ARM calls per key).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rotation.credential_store import CreateResult, CredentialStoreError, ProbeResult, SecretValue
from rotation.policy import MASTER_KEY_NAME, Target
from rotation.redaction import safe_error_message

if TYPE_CHECKING:
    from azure.mgmt.web import WebSiteManagementClient

log = logging.getLogger("keyrotation.activities.function_keys")

KIND = "functions-key"
# Statuses where backing off can help: throttling, and the target's host being unhealthy (listkeys
# answers 500/503 "from host runtime" then; Azure/Azure-Functions#2660).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
T = TypeVar("T")

# The ARM action each WebSiteManagementClient call of this module needs, keyed by (SDK operation, host key
# type). infra/modules/role-definition.bicep grants exactly these (tests/unit/infra/test_infra.py checks both ways):
# listing is a POST .../listkeys action, a key PUT/DELETE is a write/delete on the key's resource type.
# Host secrets are authorized per key type (the `keyType` segment: functionKeys, masterKey); the master
# key is only ever renewed (PUT), never deleted. `_slot` operations act on .../sites/{name}/slots/{slot}.
ARM_ACTIONS: dict[tuple[str, str | None], str] = {
    ("list_host_keys", None): "Microsoft.Web/sites/host/listkeys/action",
    ("list_function_keys", None): "Microsoft.Web/sites/functions/listkeys/action",
    ("create_or_update_host_secret", "functionKeys"): "Microsoft.Web/sites/host/functionKeys/write",
    ("create_or_update_host_secret", "masterKey"): "Microsoft.Web/sites/host/masterKey/write",
    ("create_or_update_function_secret", None): "Microsoft.Web/sites/functions/keys/write",
    ("delete_host_secret", "functionKeys"): "Microsoft.Web/sites/host/functionKeys/delete",
    ("delete_function_secret", None): "Microsoft.Web/sites/functions/keys/delete",
    ("list_host_keys_slot", None): "Microsoft.Web/sites/slots/host/listkeys/action",
    ("list_function_keys_slot", None): "Microsoft.Web/sites/slots/functions/listkeys/action",
    ("create_or_update_host_secret_slot", "functionKeys"): "Microsoft.Web/sites/slots/host/functionKeys/write",
    ("create_or_update_host_secret_slot", "masterKey"): "Microsoft.Web/sites/slots/host/masterKey/write",
    ("create_or_update_function_secret_slot", None): "Microsoft.Web/sites/slots/functions/keys/write",
    ("delete_host_secret_slot", "functionKeys"): "Microsoft.Web/sites/slots/host/functionKeys/delete",
    ("delete_function_secret_slot", None): "Microsoft.Web/sites/slots/functions/keys/delete",
}


def _store_error(exc: Exception, action: str) -> CredentialStoreError:
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    retryable = status is None or status in RETRYABLE_STATUSES
    return CredentialStoreError(f"{action}: {safe_error_message(exc)}", retryable=retryable, status_code=status)


class FunctionKeyStore:
    """The key scope of one target (`target.key_scope`) on its app or slot (`target.function_app`)."""

    kind = KIND

    def __init__(self, target: Target, client: WebSiteManagementClient | None = None) -> None:
        self.target = target
        self._client = client
        self._listing: dict[str, SecretValue] | None = None

    # -- plumbing ------------------------------------------------------------------------------------

    @property
    def supports_overlap(self) -> bool:
        """The master key is renewed in place under one name: the old value dies with the renewal."""
        return not self.target.is_master_key

    @property
    def client(self) -> WebSiteManagementClient:
        if self._client is None:
            from activities import clients

            self._client = clients.web_client(self.target.function_app.subscription_id, budget=self.target.calls)
        return self._client

    def _call(self, action: str, operation: Callable[..., T], *args: Any) -> T:
        """Run one ARM operation (production or slot variant); SDK errors become CredentialStoreError with
        a message that carries no request or response body (invariant I1)."""
        app = self.target.function_app
        try:
            return operation(app.resource_group, app.name, *args)
        except Exception as exc:
            raise _store_error(exc, f"{action} on {app.resource_id}") from None

    def _operation(self, name: str) -> Callable[..., Any]:
        """`web_apps.<name>` for the production slot, `web_apps.<name>_slot` for a deployment slot."""
        apps = self.client.web_apps
        operation: Callable[..., Any] = getattr(apps, f"{name}_slot" if self.target.function_app.slot else name)
        return operation

    def _slot_args(self) -> tuple[str, ...]:
        slot = self.target.function_app.slot
        return (slot,) if slot else ()

    # -- reading -------------------------------------------------------------------------------------

    def list_keys(self, *, refresh: bool = False) -> dict[str, SecretValue]:
        """Every key of the scope with its value, from one listkeys call (cached until the next write).
        Never system keys: they belong to extensions."""
        if self._listing is not None and not refresh:
            return dict(self._listing)
        scope = self.target.key_scope
        if scope.kind == "function":
            raw = self._call(
                "list function keys", self._operation("list_function_keys"), scope.function, *self._slot_args()
            )
            data = dict(raw)
            nested = data.get("properties")
            pairs = nested if isinstance(nested, dict) else data  # ARM answers flat; tolerate a wrapped map
        else:
            keys = self._call("list host keys", self._operation("list_host_keys"), *self._slot_args())
            if scope.kind == "masterKey":
                pairs = {MASTER_KEY_NAME: keys.master_key} if keys.master_key else {}
            else:
                pairs = dict(keys.function_keys or {})
        self._listing = {name: SecretValue(value) for name, value in pairs.items() if isinstance(value, str) and value}
        return dict(self._listing)

    def list_names(self) -> list[str]:
        return sorted(self.list_keys())

    def find(self, name: str) -> str | None:
        """The name as the target spells it (key names are case-insensitive), or None when absent."""
        wanted = name.lower()
        return next((n for n in self.list_keys() if n.lower() == wanted), None)

    def read_value(self, name: str) -> SecretValue | None:
        actual = self.find(name)
        return self.list_keys()[actual] if actual else None

    # -- writing -------------------------------------------------------------------------------------

    def _put(self, name: str) -> int:
        """PUT the key without a value; returns the HTTP status (201 created, 200 renewed)."""
        scope = self.target.key_scope
        body = {"properties": {"name": name}}  # quirk 1: a plain dict with `properties`; no value (quirk 2)

        def status(pipeline_response: Any, deserialized: Any, headers: Any) -> int:
            return int(pipeline_response.http_response.status_code)

        self._listing = None
        if scope.kind == "function":
            operation, args = self._operation("create_or_update_function_secret"), (scope.function, name)
        else:
            operation, args = self._operation("create_or_update_host_secret"), (scope.host_key_type, name)
        put: Callable[..., int] = functools.partial(operation, cls=status)  # cls= makes the SDK return status()
        return self._call(f"create key {name}", put, *args, *self._slot_args(), body)

    def create(self, name: str) -> CreateResult:
        """Create `name` with a generated value; an existing name is left alone (created=False)."""
        if self.target.is_master_key:
            raise CredentialStoreError("the master key cannot be created, only renewed (renew)", retryable=False)
        if self.find(name) is not None:
            return CreateResult(name, created=False)
        self._put(name)
        log.info("created key %s on %s", name, self.target.function_app.resource_id)
        return CreateResult(name, created=True)

    def renew(self, name: str) -> None:
        """Have Functions generate a new master key value in place. The old value stops working (after
        host caches expire): there is no overlap, so only emergency rotations do this."""
        if not self.target.is_master_key or name != MASTER_KEY_NAME:
            raise CredentialStoreError(f"only the master key is renewed in place, not {name}", retryable=False)
        self._put(MASTER_KEY_NAME)
        log.info("renewed the master key of %s", self.target.function_app.resource_id)

    def delete(self, name: str) -> bool:
        """Delete `name`; False when it was already gone (404 = done). Reserved `_` names (the master key,
        which cannot be deleted, only renewed) are refused."""
        if name.startswith("_"):
            raise CredentialStoreError(f"refusing to delete reserved key {name}", retryable=False)
        from azure.core.exceptions import ResourceNotFoundError

        scope = self.target.key_scope
        app = self.target.function_app
        if self._listing is not None:  # the rest of the listing stays true: no need to list again
            self._listing = {n: v for n, v in self._listing.items() if n.lower() != name.lower()}
        try:
            if scope.kind == "function":
                self._operation("delete_function_secret")(
                    app.resource_group, app.name, scope.function, name, *self._slot_args()
                )
            else:
                self._operation("delete_host_secret")(
                    app.resource_group, app.name, scope.host_key_type, name, *self._slot_args()
                )
        except ResourceNotFoundError:
            log.info("key %s on %s was already gone", name, app.resource_id)
            return False
        except Exception as exc:
            raise _store_error(exc, f"delete key {name} on {app.resource_id}") from None
        log.info("deleted key %s on %s", name, app.resource_id)
        return True

    def probe(self, value: SecretValue) -> ProbeResult:
        """One attempt of the policy's probe (activities/probe.py); the caller owns retries."""
        from activities import probe

        return probe.probe_once(self.target, value)
