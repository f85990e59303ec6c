"""A sample consumer of the key rotation events: a Functions app of its own (v2 programming model), and a
thin user of the consumer kit (`kit/`, package keyrotation_kit).

It calls one target function app with a key the kit keeps in memory. The kit follows the rotations:
`NewKeyAvailable` for the target makes it read that exact Key Vault version with this app's own identity
and swap; a refused call is retried once with a fresher key; the first call that works with a rotation's
key acknowledges it, so the overlap can end early. Imports nothing from the rotation app. Settings: see
README.md.
"""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
from keyrotation_kit import ConsumerKit, NoKeyError, kit_session, load_settings
from keyrotation_kit.functions import rotation_events_blueprint

settings = load_settings()  # a bad setting stops the app at startup, naming the setting
kit = ConsumerKit(settings).start()  # start(): the jittered periodic refresh, for events that never arrive
session = kit_session(kit)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
# on_rotation_event: subscribe it with CloudEvents and the exact subject filter `targets/<CONSUMER_TARGET_ID>`.
app.register_functions(rotation_events_blueprint(kit))


def _json(value: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(value), status_code=status, mimetype="application/json")


@app.route(route="consumer/state", methods=["GET"])
def consumer_state(req: func.HttpRequest) -> func.HttpResponse:
    """Which version the kit holds, its fingerprint (sha256 prefix) and the ack — never the value."""
    return _json(kit.state())


@app.route(route="consumer/call-target", methods=["POST"])
def call_target(req: func.HttpRequest) -> func.HttpResponse:
    """Calls CONSUMER_TARGET_URL with the kit's key: shows the consumer really works with it."""
    if not settings.target_url:
        return _json({"error": "CONSUMER_TARGET_URL is not set"}, 409)
    try:
        response = session.get(settings.target_url, timeout=10, allow_redirects=False, verify=settings.verify)
    except NoKeyError as exc:
        return _json({"error": str(exc)}, 503)
    except Exception as exc:
        return _json({"error": f"target unreachable: {type(exc).__name__}"}, 502)
    state = kit.state()
    return _json({
        "targetStatus": response.status_code,
        "retried": bool(response.history),
        "version": state["version"],
        "fingerprint": state["fingerprint"],
    })  # fmt: skip
