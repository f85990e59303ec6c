"""The OpenAPI 3.1 document of the operator API (GET /api/openapi.json): every route, its app role, its
bodies and its errors. tests/e2e/test_openapi.py fails when a registered route is missing here or an example
does not validate against its schema, so the contract cannot drift from the app silently.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from rotation.identity import ROLE_APPROVER, ROLE_CONSUMER, ROLE_EMERGENCY, ROLE_OPERATOR, ROLE_READER

TARGET = "demo-orders"
ROTATION = "demo-orders-20260105t030000z-e"
STAMP = "2026-01-05T03:00:00Z"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str | list[str]) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"]}


STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
NSTR = nullable("string")
OBJ: dict[str, Any] = {"type": "object"}

ERROR_TEXT = {
    400: "invalid input: a path segment, query parameter or body field (error.field names it)",
    401: "no App Service Authentication identity (WWW-Authenticate: Bearer)",
    403: "the caller lacks the app role this route needs",
    404: "no such target or rotation",
    409: "a state conflict: a rotation is running, the rotation is in another stage, the target forbids it",
    413: "the body is larger than 16 KiB",
    502: "Azure could not be read (Key Vault)",
    503: "the rotation policy cannot be loaded",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": STR, "message": STR, "field": STR},
            }
        },
    },
    "Reason": {"type": "object", "properties": {"reason": STR}, "additionalProperties": False},
    "EmergencyRequest": {
        "type": "object",
        "required": ["reason"],
        "properties": {"reason": STR, "overlap": {"type": "string", "description": "ISO 8601, e.g. PT0S"}},
        "additionalProperties": False,
    },
    "ExtendRequest": {
        "type": "object",
        "required": ["by"],
        "properties": {"by": {"type": "string", "description": "ISO 8601, PT1M to P7D"}, "reason": STR},
        "additionalProperties": False,
    },
    "Accepted": {
        "type": "object",
        "required": ["rotationId", "targetId", "statusUrl"],
        "properties": {
            "rotationId": STR,
            "targetId": STR,
            "statusUrl": STR,
            "mode": STR,
            "supersededRotationId": NSTR,
            "handover": STR,
            "replaces": OBJ,
        },
    },
    "Decision": {
        "type": "object",
        "required": ["rotationId", "targetId", "action", "statusUrl"],
        "properties": {
            "rotationId": STR,
            "targetId": STR,
            "statusUrl": STR,
            "action": {"enum": ["ack", "approve", "abort", "extend"]},
        },
    },
    "Target": {
        "type": "object",
        "required": ["id", "enabled", "policy", "lastRotation", "inFlight"],
        "properties": {
            "id": STR,
            "description": NSTR,
            "enabled": BOOL,
            "policy": OBJ,
            "currentKeyName": NSTR,
            "currentVersion": NSTR,
            "currentSecretId": NSTR,
            "lastRotation": nullable("object"),
            "nextDue": NSTR,
            "inFlight": nullable("object"),
        },
    },
    "TargetList": {
        "type": "object",
        "required": ["targets"],
        "properties": {"targets": {"type": "array", "items": ref("Target")}},
    },
    "Step": {
        "type": "object",
        "required": ["step", "status", "at"],
        "properties": {"step": STR, "status": STR, "at": STR, "detail": STR, "actor": OBJ},
    },
    "Rotation": {
        "type": "object",
        "required": ["rotationId", "targetId", "mode", "runtimeStatus", "stage", "outcome", "steps"],
        "properties": {
            "rotationId": NSTR,
            "targetId": NSTR,
            "mode": NSTR,
            "runtimeStatus": STR,
            "stage": STR,
            "outcome": NSTR,
            "trigger": OBJ,
            "keyName": NSTR,
            "version": NSTR,
            "secretId": NSTR,
            "previousKeyName": NSTR,
            "previousVersion": NSTR,
            "overlapEndsAt": NSTR,
            "hold": nullable("object"),
            "revocation": {
                "type": ["object", "null"],
                "description": "After revoke: whether the target refuses the old values. status verifying, refused,"
                " still-accepted or not-verified (no probe); firstRefusedAt: when it was first seen refusing every"
                " one (for an emergency, the evidence that the leaked key is dead); stillAccepted: key names.",
            },
            "steps": {"type": "array", "items": ref("Step")},
            "createdAt": NSTR,
            "lastUpdatedAt": NSTR,
        },
    },
    "VersionRef": {
        "type": "object",
        "required": ["version", "secretId", "stage"],
        "properties": {
            "version": STR,
            "secretId": STR,
            "keyName": NSTR,
            "rotationId": NSTR,
            "stage": NSTR,
            "createdAt": STR,
            "expiresAt": NSTR,
        },
    },
    "Plan": {
        "type": "object",
        "required": [
            "targetId",
            "mode",
            "at",
            "starts",
            "due",
            "why",
            "rotationId",
            "newKeyName",
            "deleteKeys",
            "disableVersions",
            "overlap",
            "gate",
            "consumers",
            "blastRadius",
            "warnings",
        ],
        "properties": {
            "targetId": STR,
            "mode": {"enum": ["scheduled", "on-demand", "emergency"]},
            "at": STR,
            "starts": BOOL,
            "due": nullable("boolean"),
            "why": STR,
            "nextDue": STR,
            "rotationId": STR,
            "newKeyName": STR,
            "current": {"oneOf": [ref("VersionRef"), {"type": "null"}]},
            "functionApp": {
                "type": "object",
                "required": ["resourceId", "slot", "keyScope"],
                "properties": {"resourceId": STR, "slot": STR, "keyScope": OBJ},
            },
            "deleteKeys": {"type": ["array", "null"], "items": STR},
            "disableVersions": {"type": ["array", "null"], "items": ref("VersionRef")},
            "revokedWhen": STR,
            "overlap": STR,
            "gate": {
                "type": "object",
                "required": ["applies"],
                "properties": {
                    "applies": BOOL,
                    "signal": NSTR,
                    "threshold": nullable("object"),
                    "holdDeadline": NSTR,
                    "holdDefault": NSTR,
                },
            },
            "consumers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "objectId", "acknowledgedLast"],
                    "properties": {
                        "name": STR,
                        "objectId": STR,
                        "lastRotationId": NSTR,
                        "acknowledgedLast": nullable("boolean"),
                    },
                },
            },
            "blastRadius": {
                "type": "object",
                "required": ["keysDeleted", "versionsDisabled", "consumersToMove", "when"],
                "properties": {
                    "keysDeleted": nullable("integer"),
                    "versionsDisabled": nullable("integer"),
                    "consumersToMove": INT,
                    "when": STR,
                },
            },
            "inFlight": nullable("object"),
            "warnings": {"type": "array", "items": STR},
        },
    },
    "PlanAll": {
        "type": "object",
        "required": ["at", "targets"],
        "properties": {"at": NSTR, "targets": {"type": "array", "items": ref("Plan")}},
    },
    "HistoryEntry": {
        "type": "object",
        "required": ["rotationId", "mode", "startedAt", "outcome", "source", "versions"],
        "properties": {
            "rotationId": STR,
            "mode": {"enum": ["scheduled", "on-demand", "emergency"]},
            "startedAt": STR,
            "endedAt": NSTR,
            "outcome": NSTR,
            "stage": NSTR,
            "source": {"enum": ["key-vault", "durable-status"]},
            "keyName": NSTR,
            "keyInUse": BOOL,
            "trigger": nullable("object"),
            "versions": {"type": "array", "items": OBJ},
        },
    },
    "History": {
        "type": "object",
        "required": ["targetId", "rotations", "nextCursor"],
        "properties": {
            "targetId": STR,
            "rotations": {"type": "array", "items": ref("HistoryEntry")},
            "nextCursor": NSTR,
        },
    },
    "OpenApi": {"type": "object", "required": ["openapi", "paths"]},
}

PLAN_EXAMPLE: dict[str, Any] = {
    "targetId": TARGET,
    "mode": "emergency",
    "at": STAMP,
    "starts": True,
    "due": None,
    "why": "emergency rotation on request",
    "rotationId": ROTATION,
    "newKeyName": "orders-client-20260105t030000z-e",
    "current": {
        "version": "a1b2",
        "secretId": "https://kv.vault.azure.net/secrets/orders/a1b2",
        "keyName": "orders-client-20251201t030000z-s",
        "rotationId": "demo-orders-20251201t030000z-s",
        "stage": "current",
        "createdAt": "2025-12-01T03:00:05Z",
        "expiresAt": None,
    },
    "functionApp": {
        "resourceId": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Web/sites/demo-orders",
        "slot": "production",
        "keyScope": {"kind": "function", "function": "orders"},
    },
    "deleteKeys": ["orders-client", "orders-client-20251201t030000z-s"],
    "disableVersions": [],
    "revokedWhen": "at once, after the new key is announced",
    "overlap": "PT0S",
    "gate": {"applies": False, "signal": None, "threshold": None, "holdDeadline": None, "holdDefault": None},
    "consumers": [
        {"name": "billing-worker", "objectId": "c001", "lastRotationId": None, "acknowledgedLast": None},
    ],
    "blastRadius": {"keysDeleted": 2, "versionsDisabled": 0, "consumersToMove": 1, "when": "at once"},
    "inFlight": None,
    "warnings": [],
}
TARGET_EXAMPLE: dict[str, Any] = {
    "id": TARGET,
    "description": "orders API",
    "enabled": True,
    "policy": {"id": TARGET},
    "currentKeyName": "orders-client",
    "currentVersion": None,
    "currentSecretId": None,
    "lastRotation": None,
    "nextDue": None,
    "inFlight": None,
}
ROTATION_EXAMPLE: dict[str, Any] = {
    "rotationId": ROTATION,
    "targetId": TARGET,
    "mode": "emergency",
    "runtimeStatus": "Completed",
    "stage": "completed",
    "outcome": "completed",
    "trigger": {"actor": {"kind": "principal", "name": "responder", "objectId": "a1"}, "reason": "leaked"},
    "keyName": "orders-client-20260105t030000z-e",
    "steps": [{"step": "revoke", "status": "done", "at": STAMP, "detail": "deleted orders-client"}],
    "createdAt": STAMP,
    "lastUpdatedAt": STAMP,
}
HISTORY_EXAMPLE: dict[str, Any] = {
    "targetId": TARGET,
    "rotations": [
        {
            "rotationId": ROTATION,
            "mode": "emergency",
            "startedAt": STAMP,
            "endedAt": STAMP,
            "outcome": "completed",
            "stage": "completed",
            "source": "durable-status",
            "keyName": "orders-client-20260105t030000z-e",
            "keyInUse": True,
            "trigger": {"actor": {"kind": "principal", "name": "responder"}, "reason": "leaked"},
            "versions": [{"version": "c3d4", "stage": "current", "enabled": True, "createdAt": STAMP}],
        }
    ],
    "nextCursor": None,
}
ACCEPTED_EXAMPLE = {"rotationId": ROTATION, "targetId": TARGET, "statusUrl": f"/api/rotations/{ROTATION}"}


def op(
    summary: str,
    role: str,
    ok: tuple[int, str, Any],
    errors: tuple[int, ...],
    params: tuple[str, ...] = (),
    body: tuple[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation: its role (x-app-role and the security requirement), parameters, body, answers."""
    status, schema, example = ok
    responses: dict[str, Any] = {
        str(status): {
            "description": "accepted" if status == 202 else "ok",
            "content": {"application/json": {"schema": ref(schema), "example": example}},
        }
    }
    for code in sorted({401, 403, 500, *errors}):
        text = ERROR_TEXT.get(code, "internal error; see the app's log")
        responses[str(code)] = {
            "description": text,
            "content": {"application/json": {"schema": ref("Error")}},
        }
    operation: dict[str, Any] = {
        "summary": summary,
        "x-app-role": role,
        "security": [{"easyAuth": [role]}],
        "parameters": [{"$ref": f"#/components/parameters/{p}"} for p in params],
        "responses": responses,
    }
    if body is not None:
        name, example = body
        operation["requestBody"] = {
            "required": name != "Reason",
            "content": {"application/json": {"schema": ref(name), "example": example}},
        }
    return operation


def query_param(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


PARAMETERS = {
    "target": {
        "name": "target",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]$"},
    },
    "id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "a rotation id"},
    "mode": query_param(
        "mode", {"enum": ["scheduled", "on-demand", "emergency"]}, "which rotation (default scheduled)"
    ),
    "overlap": query_param("overlap", STR, "mode=emergency only: the overlap asked for, ISO 8601"),
    "limit": query_param("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "page size (default 20)"),
    "cursor": query_param("cursor", STR, "nextCursor of the previous page"),
}

DECISION = (
    202,
    "Decision",
    {"rotationId": ROTATION, "targetId": TARGET, "action": "approve", "statusUrl": f"/api/rotations/{ROTATION}"},
)
WRONG_STAGE = (400, 404, 409, 413, 503)


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/targets": {
            "get": op(
                "list targets and their latest rotation",
                ROLE_READER,
                (200, "TargetList", {"targets": [TARGET_EXAMPLE]}),
                (400, 503),
            )
        },
        "/api/targets/{target}": {
            "get": op("one target", ROLE_READER, (200, "Target", TARGET_EXAMPLE), (400, 404, 503), ("target",))
        },
        "/api/targets/{target}/rotations": {
            "get": op(
                "past rotations, newest first (from Key Vault version tags)",
                ROLE_READER,
                (200, "History", HISTORY_EXAMPLE),
                (400, 404, 502, 503),
                ("target", "limit", "cursor"),
            ),
            "post": op(
                "start an on-demand rotation",
                ROLE_OPERATOR,
                (202, "Accepted", {**ACCEPTED_EXAMPLE, "mode": "on-demand"}),
                (400, 404, 409, 413, 503),
                ("target",),
                ("Reason", {"reason": "quarterly"}),
            ),
        },
        "/api/targets/{target}/emergency-rotation": {
            "post": op(
                "rotate now and kill every old key of the family",
                ROLE_EMERGENCY,
                (202, "Accepted", {**ACCEPTED_EXAMPLE, "mode": "emergency"}),
                (400, 404, 409, 413, 503),
                ("target",),
                ("EmergencyRequest", {"reason": "key leaked in a log", "overlap": "PT0S"}),
            ),
        },
        "/api/targets/{target}/plan": {
            "get": op(
                "what a rotation would do now (changes nothing)",
                ROLE_READER,
                (200, "Plan", PLAN_EXAMPLE),
                (400, 404, 503),
                ("target", "mode", "overlap"),
            )
        },
        "/api/plan": {
            "get": op(
                "what the next scheduler tick would do, per target",
                ROLE_READER,
                (200, "PlanAll", {"at": STAMP, "targets": [PLAN_EXAMPLE]}),
                (400, 503),
            )
        },
        "/api/rotations/{id}": {
            "get": op(
                "a rotation's stage and timeline",
                ROLE_READER,
                (200, "Rotation", ROTATION_EXAMPLE),
                (400, 404, 503),
                ("id",),
            )
        },
        "/api/rotations/{id}/ack": {
            "post": op(
                "a consumer has the new key",
                ROLE_CONSUMER,
                (202, "Decision", {**DECISION[2], "action": "ack"}),
                WRONG_STAGE,
                ("id",),
            )
        },
        "/api/rotations/{id}/approve": {
            "post": op(
                "release a held rotation",
                ROLE_APPROVER,
                DECISION,
                WRONG_STAGE,
                ("id",),
                ("Reason", {"reason": "failures are a test client"}),
            )
        },
        "/api/rotations/{id}/abort": {
            "post": op(
                "abort a held rotation",
                ROLE_APPROVER,
                (202, "Decision", {**DECISION[2], "action": "abort"}),
                WRONG_STAGE,
                ("id",),
                ("Reason", {"reason": "real outage"}),
            )
        },
        "/api/rotations/{id}/extend": {
            "post": op(
                "hold longer",
                ROLE_APPROVER,
                (202, "Decision", {**DECISION[2], "action": "extend"}),
                WRONG_STAGE,
                ("id",),
                ("ExtendRequest", {"by": "PT6H", "reason": "waiting for the team"}),
            )
        },
        "/api/openapi.json": {
            "get": op("this document", ROLE_READER, (200, "OpenApi", {"openapi": "3.1.0", "paths": {}}), (400,))
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyrotation operator API",
            "version": "1",
            "description": "Every route needs an App Service Authentication (Easy Auth) identity with the app role "
            "in x-app-role. Errors are {error: {code, message, field?}}; no route takes a function key.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "securitySchemes": {
                "easyAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an Entra ID token for the app's Easy Auth audience; roles are app roles",
                }
            },
        },
    }


def document() -> dict[str, Any]:
    """A copy of the document (callers may not change the cached one)."""
    return copy.deepcopy(_document())
