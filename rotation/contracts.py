"""Types shared by the layers' function signatures.

`ActivityRequest` is the annotation of every activity's input. Azure's Python worker indexes the app
before anything runs and refuses a binding parameter whose annotation is neither a class nor a typing
generic (`azure_functions_runtime/functions.py`, `Registry.add_indexed_function`: "binding request has
invalid non-type annotation dict[str, typing.Any]"); on Azure such a function simply does not exist.
A plain `dict` passes, so at run time the alias is the bare class, while type checkers see
`dict[str, Any]`; tests/integration/devhost/test_worker_indexing.py indexes the app through the pinned runtime so an
annotation the worker refuses can never land again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    type ActivityRequest = dict[str, Any]
else:
    ActivityRequest = dict  # what the worker's indexer sees (see above)

# The Durable runtime statuses in which an instance still owns its id (a start onto it is refused or dropped).
RUNNING_STATUSES = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})


def json_object(value: Any) -> dict[str, Any]:
    """A Durable payload as a dict: inputs, outputs, custom statuses and event data arrive as JSON text or
    already decoded (the Python client double-encodes); anything that is not an object is empty."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}
