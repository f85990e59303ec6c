"""Placeholder: being written."""

from aiohttp import web

from emulators.state import EmulatorState


def register(app: web.Application, state: EmulatorState) -> None:
    """Add this service's routes."""
