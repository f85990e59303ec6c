"""Types shared by the layers' function signatures.

`ActivityRequest` is the annotation of every activity's input. Azure's Python worker indexes the app
before anything runs and refuses a binding parameter whose annotation is neither a class nor a typing
generic (`azure_functions_runtime/functions.py`, `Registry.add_indexed_function`: "binding request has
invalid non-type annotation dict[str, typing.Any]"); on Azure such a function simply does not exist.
A plain `dict` passes, so at run time the alias is the bare class, while type checkers see
`dict[str, Any]`; tests/test_worker_indexing.py indexes the app through the pinned runtime so an
annotation the worker refuses can never land again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    type ActivityRequest = dict[str, Any]
else:
    ActivityRequest = dict  # what the worker's indexer sees (see above)
