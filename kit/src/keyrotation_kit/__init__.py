"""keyrotation-kit: the library a service installs to follow its Functions key's rotations.

    kit = ConsumerKit.from_env().start()
    session = kit_session(kit)                 # requests
    client = httpx.Client(auth=keyrotation_kit.httpx_auth.FunctionKeyAuth(kit))

No key value is ever logged, raised or shown in a repr: only versions and sha256 fingerprints.
"""

from keyrotation_kit.ack import Acknowledger, AckResult
from keyrotation_kit.events import Incoming
from keyrotation_kit.holder import HeldKey, fingerprint
from keyrotation_kit.kit import ConsumerKit, NoKeyError, Outcome
from keyrotation_kit.requests_auth import FunctionKeyAuth, kit_session
from keyrotation_kit.settings import ConsumerSettings, SettingsError, load_settings
from keyrotation_kit.vault import KeyVaultError, SecretVersion
from keyrotation_kit.webhook import WebhookReply, handle_webhook

__all__ = [
    "AckResult",
    "Acknowledger",
    "ConsumerKit",
    "ConsumerSettings",
    "FunctionKeyAuth",
    "HeldKey",
    "Incoming",
    "KeyVaultError",
    "NoKeyError",
    "Outcome",
    "SecretVersion",
    "SettingsError",
    "WebhookReply",
    "fingerprint",
    "handle_webhook",
    "kit_session",
    "load_settings",
]
