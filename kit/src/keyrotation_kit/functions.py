"""For a consumer that is itself an Azure Functions app (Python v2 programming model): one call adds
the Event Grid trigger that feeds the kit.

    kit = ConsumerKit.from_env().start()
    app = func.FunctionApp()
    app.register_functions(rotation_events_blueprint(kit))

Subscribe the function (`on_rotation_event` by default) with the CloudEvents schema and an exact subject
filter `targets/<target id>` (docs/events.md). A version that could not be read raises, so the
invocation fails and Event Grid delivers the event again. Needs azure-functions, which every Functions
app has; the kit itself does not depend on it.
"""

from __future__ import annotations

from typing import Any

from keyrotation_kit.events import Incoming
from keyrotation_kit.kit import ConsumerKit

FUNCTION_NAME = "on_rotation_event"


def handle_trigger(kit: ConsumerKit, event: Any) -> str:
    """What the trigger does with `func.CloudEvent` / `func.EventGridEvent`: the kit's outcome."""
    return kit.handle_event(Incoming.from_trigger(event))


def rotation_events_blueprint(kit: ConsumerKit, function_name: str = FUNCTION_NAME) -> Any:
    """A `func.Blueprint` with one Event Grid trigger that hands every delivery to `kit`."""
    import azure.functions as func

    bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ unannotated

    def on_rotation_event(event: func.EventGridEvent) -> None:
        handle_trigger(kit, event)

    on_rotation_event.__name__ = function_name
    # The worker reads the binding's type from the annotations; `func` is local here, so resolve them now.
    on_rotation_event.__annotations__ = {"event": func.EventGridEvent, "return": None}
    bp.function_name(function_name)(bp.event_grid_trigger(arg_name="event")(on_rotation_event))
    return bp
