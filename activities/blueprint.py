"""Registers every activity under its function name; the contracts live with each function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import azure.durable_functions as df

from activities.abandon import abandon_rotation
from activities.drift import check_drift
from activities.due_targets import find_due_targets
from activities.events_publish import publish_events
from activities.provision import provision_new_key
from activities.revocation import verify_revocation
from activities.revoke import compensate_rotation, revoke_old_keys
from activities.rotation_starts import rotation_progress, start_rotation
from activities.targets import resolve_target, verify_event
from activities.telemetry import check_adoption, count_auth_failures
from activities.verify import verify_new_key

bp = df.Blueprint()

ACTIVITIES: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
    resolve_target,
    verify_event,
    find_due_targets,
    check_drift,
    provision_new_key,
    verify_new_key,
    compensate_rotation,
    abandon_rotation,
    revoke_old_keys,
    verify_revocation,
    publish_events,
    check_adoption,
    count_auth_failures,
)

for activity in ACTIVITIES:
    bp.activity_trigger(input_name="request")(activity)

# The scheduler's starts and progress reads go through the durable client (activities may take one).
CLIENT_ACTIVITIES = (start_rotation, rotation_progress)
for activity_with_client in CLIENT_ACTIVITIES:
    bp.activity_trigger(input_name="request")(bp.durable_client_input(client_name="client")(activity_with_client))
