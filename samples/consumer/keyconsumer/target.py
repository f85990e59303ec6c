"""Calling the target with the held key, the way a real consumer would (header, no redirects)."""

from __future__ import annotations

import requests

from keyconsumer.keyholder import HeldKey
from keyconsumer.settings import ConsumerSettings

TIMEOUT = 10


def call_target(settings: ConsumerSettings, key: HeldKey) -> int:
    """The HTTP status the target answered; the key travels only in `x-functions-key`."""
    assert settings.target_url
    response = requests.get(
        settings.target_url,
        headers={"x-functions-key": key.value},
        timeout=TIMEOUT,
        allow_redirects=False,
        verify=settings.verify,
    )
    return response.status_code
