"""Log levels the host and its worker process share."""

from __future__ import annotations

import logging

# Libraries whose INFO lines are per-request noise (azure.core's HTTP logging policy among them).
NOISY_LOGGERS = ("azure.core.pipeline", "azure.identity", "aiohttp.access", "urllib3")


def quiet_libraries() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
