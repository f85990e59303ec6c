"""Telling the rotation app this consumer switched: `POST {api}/api/rotations/{id}/ack`.

The rotation app sits behind App Service Authentication, so the call carries a bearer token for its
Easy Auth audience: from the consumer's managed identity in Azure, or a static devhost-issued token
(`python -m devhost token --role KeyRotation.Consumer --oid <object id>`) on the local stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import requests

from keyconsumer.credential import make_credential
from keyconsumer.settings import ConsumerSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

ROTATION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]-\d{8}t\d{6}z-[soe]$")
TIMEOUT = 10


@dataclass(frozen=True)
class AckResult:
    http_status: int | None
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    @property
    def final(self) -> bool:
        """No point trying again: done, or a decision a retry cannot change — a bad request (400), not a
        registered consumer of the target (403), an unknown rotation (404), not in its overlap (409).
        401 (a token that expired or was refused), 429, 5xx and network errors are worth retrying."""
        return self.acknowledged or self.http_status in (400, 403, 404, 409)


class Acknowledger:
    def __init__(self, settings: ConsumerSettings, credential: TokenCredential | None = None) -> None:
        self.settings = settings
        self._credential = credential

    def _token(self) -> str:
        if self.settings.api_token:  # local stack only (settings refuse it otherwise)
            return self.settings.api_token
        if self._credential is None:
            self._credential = make_credential(self.settings)
        audience = str(self.settings.api_audience).rstrip("/")
        return self._credential.get_token(f"{audience}/.default").token

    def ack(self, rotation_id: str) -> AckResult:
        """One attempt; never raises for HTTP or network failures, the caller decides what to retry."""
        if not ROTATION_ID.match(rotation_id):
            return AckResult(None, "not a rotation id")
        url = f"{self.settings.api_url}/api/rotations/{quote(rotation_id)}/ack"
        try:
            response = requests.post(
                url,
                headers={"Authorization": f"Bearer {self._token()}"},
                json={},
                timeout=TIMEOUT,
                allow_redirects=False,
                verify=self.settings.verify,
            )
        except requests.RequestException as exc:
            return AckResult(None, type(exc).__name__)
        except Exception as exc:  # a token that could not be obtained
            return AckResult(None, f"token: {type(exc).__name__}")
        return AckResult(response.status_code, None if response.ok else f"HTTP {response.status_code}")
