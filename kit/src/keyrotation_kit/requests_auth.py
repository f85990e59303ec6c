"""`requests` adapter: an auth that sends the kit's key in `x-functions-key` and, on a 401/403, resends
the request once with the key the kit offers instead (the newest version, or the previous one during an
overlap). The same pattern as requests' own HTTPDigestAuth (a response hook that resends)."""

from __future__ import annotations

from typing import Any

import requests
from requests.auth import AuthBase

from keyrotation_kit.holder import HeldKey
from keyrotation_kit.kit import REFUSED, ConsumerKit, accepted

HEADER = "x-functions-key"


class FunctionKeyAuth(AuthBase):
    """`requests.get(url, auth=FunctionKeyAuth(kit))`, or `session.auth = FunctionKeyAuth(kit)`."""

    def __init__(self, kit: ConsumerKit, header: str = HEADER) -> None:
        self.kit = kit
        self.header = header

    def __repr__(self) -> str:
        return f"FunctionKeyAuth({self.kit!r})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        key = self.kit.key()
        self.kit.holder.count("calls")
        request.headers[self.header] = key.value
        request.register_hook("response", self._make_hook(key))  # type: ignore[no-untyped-call]  # stubs lack it
        return request

    def _make_hook(self, used: HeldKey) -> Any:
        def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
            if accepted(response.status_code):
                self.kit.on_accepted(used)
                return response
            if response.status_code not in REFUSED or getattr(response.request, "_kit_retried", False):
                return response
            retry_key = self.kit.on_refused(used)
            if retry_key is None:
                return response
            self.kit.holder.count("retries")
            response.content  # noqa: B018 - drain the body so the connection can be reused
            response.close()
            request = response.request.copy()
            request.headers[self.header] = retry_key.value
            request.hooks = {"response": []}  # no second retry
            request._kit_retried = True  # type: ignore[attr-defined]  # marks the resend for any outer hook
            retried = response.connection.send(request, **kwargs)
            retried.history.append(response)
            retried.request = request
            if accepted(retried.status_code):
                self.kit.on_accepted(retry_key)
            return retried

        return hook


def kit_session(kit: ConsumerKit, header: str = HEADER) -> requests.Session:
    """A Session whose every request carries the kit's key, with the one retry on 401/403."""
    session = requests.Session()
    session.auth = FunctionKeyAuth(kit, header)
    return session
