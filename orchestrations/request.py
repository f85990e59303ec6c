"""The request a rotation runs on: its signed input (rotation/inputs.py) and the target its first step
resolved from the deployed policy (activities/targets.py `resolve_target`), trusted from there on."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from orchestrations.predecessor import Predecessor
from rotation.durations import parse_duration
from rotation.inputs import RotationInput
from rotation.policy import Target, trusted_target


@dataclass(frozen=True)
class RotationRequest:
    """The orchestration input (rotation/inputs.py: it names the target, signed by the app) with the
    target the first step resolved from the deployed policy. The rotation keeps that definition's timing
    (overlap, hold, consumers) to the end; every step looks the target up again and refuses to act once
    the policy sends its keys elsewhere (`fingerprint`)."""

    input: RotationInput
    target: Target
    replaces: Predecessor | None = None

    @staticmethod
    def of(data: Mapping[str, Any], target_json: Mapping[str, Any], fingerprint: str) -> RotationRequest:
        """The input check_shape accepted, with the target resolve_target found for it."""
        given = dataclasses.replace(RotationInput.from_json(data), fingerprint=fingerprint)
        target = trusted_target(target_json)  # the deployed policy's own, validated when it was loaded
        stuck = given.replaces
        replaces = Predecessor.from_json(stuck, target.id, given.rotation_id) if stuck is not None else None
        return RotationRequest(given, target, replaces)

    @property
    def overlap(self) -> timedelta | None:
        return parse_duration(self.input.overlap) if self.input.overlap else None
