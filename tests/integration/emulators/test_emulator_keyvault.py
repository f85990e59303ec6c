"""Key Vault emulator conformance with the unmodified SecretClient, built the way the app builds it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import HttpChallengeCache

from activities.clients import secret_client
from emulators.core.local_identity import LocalTokenCredential
from emulators.core.store import fingerprint
from tests.emulator_process import Emulator


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(emulator: Emulator) -> SecretClient:
    return secret_client(emulator.url, emulator.settings())


def last_seq(emulator: Emulator) -> int:
    log = emulator.requests_log()
    return log[-1]["seq"] if log else 0


def audit(emulator: Emulator, since: int = 0) -> list[dict[str, Any]]:
    response = emulator.control("GET", f"keyvault/audit?since={since}")
    response.raise_for_status()
    return response.json()["value"]


def changes(emulator: Emulator) -> list[dict[str, Any]]:
    return emulator.control("GET", "changes").json()["value"]


def test_challenge_round_trip_stores_the_value_once_from_the_replay(emulator: Emulator, client: SecretClient) -> None:
    HttpChallengeCache.remove_challenge_for_url(emulator.url)  # force discovery, as a fresh process would
    name, since = unique("challenge"), last_seq(emulator)

    stored = client.set_secret(name, "the-value")

    puts = [r for r in emulator.requests_log(since) if r["path"] == f"/secrets/{name}"]
    assert [(r["method"], r["status"], r["caller"]) for r in puts] == [
        ("PUT", 401, None),
        ("PUT", 200, emulator.app_object_id),
    ]
    versions = emulator.state()["keyvault"]["secrets"][name]["versions"]
    assert [(v["version"], v["value"]) for v in versions] == [(stored.properties.version, "the-value")]
    journal = [c for c in changes(emulator) if c["kind"] == "keyvault.version_set" and c["detail"]["name"] == name]
    assert len(journal) == 1 and journal[0]["detail"]["value_fingerprint"] == fingerprint("the-value")
    assert "the-value" not in str(changes(emulator))


def test_set_and_get_latest_and_by_version(emulator: Emulator, client: SecretClient) -> None:
    name = unique("get")
    first = client.set_secret(name, "one")
    second = client.set_secret(name, "two")

    assert first.id == f"{emulator.url}/secrets/{name}/{first.properties.version}"
    assert len(first.properties.version) == 32 and first.properties.version != second.properties.version
    latest = client.get_secret(name)
    assert (latest.value, latest.properties.version) == ("two", second.properties.version)
    assert client.get_secret(name, first.properties.version).value == "one"
    assert latest.properties.enabled is True
    assert latest.properties.recovery_level == "Recoverable"  # purge protection is on by default
    assert latest.properties.recoverable_days == 90


def test_tags_content_type_and_dates_round_trip(client: SecretClient) -> None:
    name = unique("props")
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    not_before = expires - timedelta(days=60)
    client.set_secret(
        name,
        "v",
        tags={"stage": "current", "rotation": "r1"},
        content_type="text/plain",
        expires_on=expires,
        not_before=not_before,
    )

    got = client.get_secret(name)
    assert got.properties.tags == {"stage": "current", "rotation": "r1"}
    assert got.properties.content_type == "text/plain"
    assert (got.properties.expires_on, got.properties.not_before) == (expires, not_before)


def test_expiry_is_not_enforced_on_reads(client: SecretClient) -> None:
    name = unique("expired")
    past = datetime.now(UTC) - timedelta(days=1)
    version = client.set_secret(name, "still-readable", expires_on=past).properties.version
    client.set_secret(name, "not-yet", not_before=datetime.now(UTC) + timedelta(days=1))

    assert client.get_secret(name, version).value == "still-readable"
    assert client.get_secret(name).value == "not-yet"


def test_update_properties_by_version_and_latest_never_returns_the_value(
    emulator: Emulator, client: SecretClient
) -> None:
    name = unique("update")
    old = client.set_secret(name, "old", tags={"stage": "current"}).properties.version
    new = client.set_secret(name, "new", tags={"stage": "current"}).properties.version

    since = last_seq(emulator)
    updated = client.update_secret_properties(name, old, tags={"stage": "previous"})
    assert (updated.version, updated.tags) == (old, {"stage": "previous"})
    assert client.update_secret_properties(name, content_type="text/plain").version == new  # latest
    assert client.get_secret(name, old).value == "old"  # the value is untouched

    patched = [r["path"] for r in emulator.requests_log(since) if r["method"] == "PATCH" and r["status"] == 200]
    assert patched == [f"/secrets/{name}/{old}", f"/secrets/{name}/"]
    kinds = [c["kind"] for c in changes(emulator) if c["subject"] == f"keyvault/secrets/{name}"]
    assert kinds == [
        "keyvault.version_set",
        "keyvault.version_set",
        "keyvault.version_updated",
        "keyvault.version_updated",
    ]


def test_reading_a_disabled_version_is_forbidden_by_version_and_as_latest(client: SecretClient) -> None:
    name = unique("disabled")
    old = client.set_secret(name, "old").properties.version
    new = client.set_secret(name, "new").properties.version
    client.update_secret_properties(name, new, enabled=False)

    for version in (new, None):
        with pytest.raises(HttpResponseError) as caught:
            client.get_secret(name, version)
        assert caught.value.status_code == 403
        error = caught.value.response.json()["error"]
        assert (error["code"], error["innererror"]["code"]) == ("Forbidden", "SecretDisabled")
    assert client.get_secret(name, old).value == "old"  # an older enabled version still reads
    client.update_secret_properties(name, new, enabled=True)
    assert client.get_secret(name).value == "new"


def test_missing_secret_and_version_are_404_secret_not_found(client: SecretClient) -> None:
    name = unique("missing")
    with pytest.raises(ResourceNotFoundError) as caught:
        client.get_secret(name)
    assert caught.value.response.json()["error"]["code"] == "SecretNotFound"
    client.set_secret(name, "v")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name, uuid.uuid4().hex)
    with pytest.raises(ResourceNotFoundError):
        client.update_secret_properties(unique("missing"), enabled=False)


def test_delete_then_set_conflicts_until_recovered(emulator: Emulator, client: SecretClient) -> None:
    name = unique("deleted")
    version = client.set_secret(name, "v1").properties.version
    poller = client.begin_delete_secret(name)
    deleted = poller.result()
    poller.wait()
    assert deleted.recovery_id == f"{emulator.url}/deletedsecrets/{name}"
    assert deleted.properties.version == version
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)

    with pytest.raises(ResourceExistsError) as caught:
        client.set_secret(name, "v2")
    error = caught.value.response.json()["error"]
    assert (error["code"], error["innererror"]["code"]) == ("Conflict", "ObjectIsDeletedButRecoverable")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert client.get_deleted_secret(name).properties.version == version
    assert name in [d.name for d in client.list_deleted_secrets()]

    client.begin_recover_deleted_secret(name).wait()
    assert client.get_secret(name).value == "v1"
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)


@pytest.fixture
def purgeable(emulator: Emulator) -> Iterator[None]:
    assert emulator.control("PATCH", "keyvault/vault", json={"purgeProtection": False}).status_code == 200
    yield
    emulator.control("PATCH", "keyvault/vault", json={"purgeProtection": True}).raise_for_status()


def test_purge_is_refused_under_purge_protection(client: SecretClient) -> None:
    name = unique("protected")
    client.set_secret(name, "v")
    client.begin_delete_secret(name).wait()
    with pytest.raises(HttpResponseError) as caught:
        client.purge_deleted_secret(name)
    assert caught.value.status_code == 403
    assert "purge protection" in caught.value.response.json()["error"]["message"]
    assert client.get_deleted_secret(name).name == name


def test_purge_without_protection_frees_the_name(emulator: Emulator, client: SecretClient, purgeable: None) -> None:
    name = unique("purged")
    client.set_secret(name, "v1")
    client.begin_delete_secret(name).wait()
    assert client.get_deleted_secret(name).properties.recovery_level == "Recoverable+Purgeable"

    client.purge_deleted_secret(name)

    assert [r["status"] for r in emulator.requests_log(last_seq(emulator) - 1) if r["method"] == "DELETE"] == [204]
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    assert client.set_secret(name, "v2").value == "v2"
    assert len(list(client.list_properties_of_secret_versions(name))) == 1


def test_versions_page_across_next_links(emulator: Emulator, client: SecretClient) -> None:
    name = unique("paged")
    created = {client.set_secret(name, f"v{i}").properties.version for i in range(7)}
    since = last_seq(emulator)

    listed = list(client.list_properties_of_secret_versions(name))

    assert {p.version for p in listed} == created and len(listed) == 7
    assert all(p.id.startswith(f"{emulator.url}/secrets/{name}/") for p in listed)
    pages = [r for r in emulator.requests_log(since) if r["path"] == f"/secrets/{name}/versions" and r["status"] == 200]
    assert len(pages) == 2 and "skiptoken=" in pages[1]["query"]  # default page size 5


def test_secrets_list_pages_with_max_page_size(emulator: Emulator, client: SecretClient) -> None:
    prefix = unique("list")
    names = {f"{prefix}-{i}" for i in range(5)}
    for name in names:
        client.set_secret(name, "v", tags={"n": name})
    since = last_seq(emulator)

    listed = {p.name: p for p in client.list_properties_of_secrets(max_page_size=2)}

    assert names <= set(listed)
    assert all(listed[n].version is None and listed[n].tags == {"n": n} for n in names)  # ids carry no version
    pages = [r for r in emulator.requests_log(since) if r["path"] == "/secrets"]
    assert len(pages) >= 3 and all("maxresults=2" in r["query"] for r in pages)


def test_audit_rows_name_the_caller_that_read(emulator: Emulator) -> None:
    name = unique("audited")

    def reader(oid: str, who: str) -> SecretClient:
        credential = LocalTokenCredential(oid, who, endpoint=emulator.url)
        return SecretClient(emulator.url, credential, verify_challenge_resource=False, connection_verify=emulator.ca)

    writer = secret_client(emulator.url, emulator.settings())
    old = writer.set_secret(name, "old")
    new = writer.set_secret(name, "new")
    since = audit(emulator)[-1]["seq"]
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())

    reader(alice, "consumer-a").get_secret(name, old.properties.version)
    reader(bob, "consumer-b").get_secret(name)

    reads = [r for r in audit(emulator, since) if r["operation"] == "SecretGet" and r["status"] == 200]
    assert [(r["caller_oid"], r["caller_name"], r["version"], r["secret_id"]) for r in reads] == [
        (alice, "consumer-a", old.properties.version, old.id),
        (bob, "consumer-b", None, new.id),
    ]
    assert all(r["ts"].endswith("Z") and r["request_uri"].startswith(f"{emulator.url}/secrets/{name}/") for r in reads)


def test_audit_records_every_operation_kind(emulator: Emulator, client: SecretClient) -> None:
    name = unique("ops")
    since = audit(emulator)[-1]["seq"]
    version = client.set_secret(name, "v").properties.version
    client.get_secret(name)
    client.update_secret_properties(name, version, tags={"a": "b"})
    list(client.list_properties_of_secret_versions(name))
    list(client.list_properties_of_secrets(max_page_size=25))
    client.begin_delete_secret(name).wait()
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)

    rows = [r for r in audit(emulator, since) if r["secret_name"] in (name, None) and r["status"] != 401]
    assert [(r["operation"], r["status"]) for r in rows] == [
        ("SecretSet", 200),
        ("SecretGet", 200),
        ("SecretUpdate", 200),
        ("SecretListVersions", 200),
        *[("SecretList", 200)] * (len(rows) - 7),
        ("SecretDelete", 200),
        ("SecretGetDeleted", 200),
        ("SecretGet", 404),
    ]
    assert rows[-1]["secret_id"] is None


def test_throttled_get_is_retried_by_the_sdk(emulator: Emulator, client: SecretClient, clean_faults: Emulator) -> None:
    name = unique("throttled")
    client.set_secret(name, "v")
    HttpChallengeCache.remove_challenge_for_url(emulator.url)
    emulator.fault(operation="keyvault.get_secret", status=429, retry_after=1, times=1)
    since = last_seq(emulator)

    assert client.get_secret(name).value == "v"

    statuses = [r["status"] for r in emulator.requests_log(since) if r["path"] == f"/secrets/{name}/"]
    assert statuses == [401, 429, 200]  # the challenge is not the faulted call
    (rule,) = emulator.control("GET", "faults").json()["value"]
    assert rule["hits"] == 1


def test_snapshot_holds_every_version_with_values_and_deleted_secrets(emulator: Emulator, client: SecretClient) -> None:
    live, gone = unique("snap"), unique("snapgone")
    client.set_secret(live, "a")
    client.update_secret_properties(live, client.set_secret(live, "b").properties.version, enabled=False)
    client.set_secret(gone, "c")
    client.begin_delete_secret(gone).wait()

    snapshot = emulator.state()["keyvault"]
    versions = snapshot["secrets"][live]["versions"]
    assert [(v["value"], v["enabled"]) for v in versions] == [("a", True), ("b", False)]
    assert snapshot["secrets"][live]["latest"] == versions[-1]["version"]
    assert gone not in snapshot["secrets"] and snapshot["deleted"][gone]["versions"][0]["value"] == "c"
    assert snapshot["vault"] == {"purgeProtection": True, "pageSize": 5}
