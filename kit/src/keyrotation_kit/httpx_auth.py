"""`httpx` adapter (`pip install keyrotation-kit[httpx]`): an `httpx.Auth` that sends the kit's key in
`x-functions-key` and, on a 401/403, sends the request once more with the key the kit offers instead.
httpx drives auth flows as generators (https://www.python-httpx.org/advanced/authentication/); the
async flow moves the kit's blocking work (a Key Vault read) off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator

import httpx

from keyrotation_kit.holder import HeldKey
from keyrotation_kit.kit import REFUSED, ConsumerKit, accepted

HEADER = "x-functions-key"


class FunctionKeyAuth(httpx.Auth):
    """`httpx.Client(auth=FunctionKeyAuth(kit))` or `httpx.AsyncClient(auth=FunctionKeyAuth(kit))`."""

    def __init__(self, kit: ConsumerKit, header: str = HEADER) -> None:
        self.kit = kit
        self.header = header

    def __repr__(self) -> str:
        return f"FunctionKeyAuth({self.kit!r})"

    def _after(self, used: HeldKey, response: httpx.Response) -> HeldKey | None:
        if accepted(response.status_code):
            self.kit.on_accepted(used)
            return None
        if response.status_code not in REFUSED:
            return None
        retry = self.kit.on_refused(used)
        if retry is not None:
            self.kit.holder.count("retries")
        return retry

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        key = self.kit.key()
        self.kit.holder.count("calls")
        request.headers[self.header] = key.value
        response = yield request
        retry = self._after(key, response)
        if retry is not None:
            request.headers[self.header] = retry.value
            response = yield request
            if accepted(response.status_code):
                self.kit.on_accepted(retry)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        key = await asyncio.to_thread(self.kit.key)
        self.kit.holder.count("calls")
        request.headers[self.header] = key.value
        response = yield request
        retry = await asyncio.to_thread(self._after, key, response)
        if retry is not None:
            request.headers[self.header] = retry.value
            response = yield request
            if accepted(response.status_code):
                self.kit.on_accepted(retry)
