"""Composition root: validates the policy, builds the Durable Functions app, registers the blueprints."""

import azure.durable_functions as df
import azure.functions as func

from activities.blueprint import bp as activities
from orchestrations.rotation import bp as rotation_lifecycle
from orchestrations.scheduler import bp as scheduler
from rotation import redaction
from rotation.policy import load_policy
from triggers.api_plan import bp as api_plan
from triggers.api_rotations import bp as api_rotations
from triggers.api_targets import bp as api_targets
from triggers.schedule import bp as schedule_triggers

redaction.install()
load_policy()  # fail at startup, listing every problem by target and field, rather than at the first tick

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (activities, rotation_lifecycle, scheduler, schedule_triggers, api_targets, api_rotations, api_plan):
    app.register_functions(blueprint)
