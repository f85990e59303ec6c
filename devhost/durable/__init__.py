"""The Durable Task engine of devhost: runs the app's orchestrations through the SDK's own replay
engine, with DTFx-shaped history in SQLite, activities on a bounded pool and a real or virtual clock."""

from devhost.durable.engine import DurableEngine

__all__ = ["DurableEngine"]
