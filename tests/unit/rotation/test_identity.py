"""Caller identity from Easy Auth's principal header: trusted only when the platform says Easy Auth is on;
anything malformed is no identity (-> 401), never an error."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from devhost.easy_auth import Principal
from rotation.identity import (
    ROLE_APPROVER,
    ROLE_EMERGENCY,
    ROLE_READER,
    ROLES,
    Actor,
    Caller,
    auth_enabled,
    caller_from_request,
    parse_principal,
)

OID = "5C1E3F0A-7D0B-4A52-9A55-6B1F4B0D8E21"
ON = {"WEBSITE_AUTH_ENABLED": "True"}


def encode(body: Any, urlsafe: bool = False) -> str:
    raw = json.dumps(body).encode()
    return (base64.urlsafe_b64encode(raw) if urlsafe else base64.b64encode(raw)).decode()


def principal(*claims: tuple[str, str], **extra: Any) -> str:
    body = {
        "auth_typ": "aad",
        "claims": [{"typ": t, "val": v} for t, v in claims],
        "name_typ": "name",
        "role_typ": "roles",
    }
    body.update(extra)
    return encode(body)


ALICE = principal(
    ("name", "alice@contoso.com"),
    ("http://schemas.microsoft.com/identity/claims/objectidentifier", OID),
    ("roles", ROLE_EMERGENCY),
    ("roles", ROLE_READER),
)


@pytest.mark.parametrize(
    ("environ", "trusted"),
    [
        ({}, False),
        ({"WEBSITE_AUTH_ENABLED": "False"}, False),
        ({"WEBSITE_AUTH_ENABLED": ""}, False),
        ({"WEBSITE_AUTH_ENABLED": "1"}, False),
        ({"WEBSITE_AUTH_ENABLED": "True"}, True),
        ({"WEBSITE_AUTH_ENABLED": "true"}, True),
        ({"WEBSITE_AUTH_ENABLED": " TRUE "}, True),
    ],
)
def test_the_header_counts_only_when_easy_auth_is_on(environ: dict[str, str], trusted: bool) -> None:
    assert auth_enabled(environ) is trusted
    caller = caller_from_request({"X-MS-CLIENT-PRINCIPAL": ALICE}, environ)
    assert (caller is not None) is trusted


def test_a_valid_principal_gives_name_object_id_and_roles() -> None:
    caller = caller_from_request({"x-ms-client-principal": ALICE}, ON)  # header names are case-insensitive
    assert caller == Caller("alice@contoso.com", OID.lower(), frozenset({ROLE_EMERGENCY, ROLE_READER}), "aad")
    assert caller.has_role(ROLE_EMERGENCY) and not caller.has_role(ROLE_APPROVER)
    assert caller.as_actor() == Actor("principal", "alice@contoso.com", OID.lower())


def test_what_devhost_injects_is_understood() -> None:
    headers = Principal("bob", OID.lower(), (ROLE_APPROVER,)).headers()
    caller = caller_from_request(headers, ON)
    assert caller is not None and caller.name == "bob" and caller.roles == {ROLE_APPROVER}


def test_claim_type_variants_azure_uses() -> None:
    long_roles = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
    long_name = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
    encoded = principal(
        ("oid", OID), (long_roles, ROLE_READER), (long_name, "svc-deployer"), role_typ=long_roles, name_typ=long_name
    )
    caller = parse_principal(encoded)
    assert caller is not None and caller.roles == {ROLE_READER} and caller.name == "svc-deployer"
    # An app (client credentials) has no name claim: it is named by its object id.
    app = parse_principal(principal(("oid", OID), ("roles", ROLE_READER)))
    assert app is not None and app.name == OID
    # URL-safe base64 and missing padding are tolerated.
    body = {"claims": [{"typ": "oid", "val": OID}]}
    assert parse_principal(encode(body, urlsafe=True).rstrip("=")) is not None


def test_roles_are_exactly_the_app_roles_given() -> None:
    caller = parse_principal(principal(("oid", OID), ("roles", "KeyRotation.reader"), ("groups", ROLE_APPROVER)))
    assert caller is not None and caller.roles == {"KeyRotation.reader"}
    assert not any(caller.has_role(r) for r in ROLES)  # role names are case-sensitive, groups are not roles


@pytest.mark.parametrize(
    "header",
    [
        "",
        "not base64 at all!",
        base64.b64encode(b"\xff\xfe binary").decode(),
        base64.b64encode(b"{not json").decode(),
        encode(["a", "list"]),
        encode({"claims": "roles"}),
        encode({"claims": [{"typ": "oid"}]}),
        encode({"claims": [{"typ": "oid", "val": 5}]}),
        principal(("name", "no object id"), ("roles", ROLE_READER)),
        principal(("oid", "not-a-guid"), ("roles", ROLE_READER)),
        "A" * 20000,
    ],
    ids=[
        "empty",
        "not-base64",
        "binary",
        "not-json",
        "not-object",
        "claims-not-list",
        "claim-without-val",
        "claim-val-not-string",
        "no-oid",
        "oid-not-guid",
        "oversized",
    ],
)
def test_malformed_principals_are_no_identity(header: str) -> None:
    assert caller_from_request({"X-MS-CLIENT-PRINCIPAL": header}, ON) is None


def test_no_header_is_no_identity() -> None:
    assert caller_from_request({"Authorization": "Bearer x"}, ON) is None


def test_actor_json_round_trip() -> None:
    actor = Actor("principal", "alice", OID.lower())
    assert Actor.from_json(actor.to_json()) == actor
