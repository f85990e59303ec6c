"""In-process checks of the Event Grid topic's SAS verification, key shape and schema translation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from azure.eventgrid import generate_sas

from emulators.core.faults import Faults
from emulators.core.state import EmulatorState
from emulators.core.store import Store
from emulators.eventgrid.auth import TOPIC_KEY_SETTING, check_sas, ensure_topic_key
from emulators.eventgrid.events import CLOUD_EVENTS, EVENT_GRID, delivery_body, matches, parse_batch

BASE = "https://127.0.0.1:8443"
KEY = base64.b64encode(b"k" * 32).decode()
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_sas_from_the_sdk_is_checked_for_signature_resource_and_expiry() -> None:
    token = generate_sas(f"{BASE}/api/events", KEY, NOW + timedelta(minutes=5))
    assert check_sas(token, KEY, BASE, NOW) is None
    assert "expired" in (check_sas(token, KEY, BASE, NOW + timedelta(minutes=6)) or "")
    assert "resource" in (check_sas(token, KEY, "https://127.0.0.1:9999", NOW) or "")
    tampered = token.replace("e=2026", "e=2027")
    assert "signature" in (check_sas(tampered, KEY, BASE, NOW) or "")
    assert "malformed" in (check_sas("SharedAccessSignature sig=abc", KEY, BASE, NOW) or "")


def test_sas_accepts_a_dotnet_style_expiry() -> None:
    """Other SDKs sign `e=` as .NET's invariant date; the signature covers the text as sent."""
    unsigned = f"r={quote(f'{BASE}/api/events?apiVersion=2018-01-01', safe='')}&e={quote('1/2/2026 3:04:05 PM')}"
    digest = hmac.new(base64.b64decode(KEY), unsigned.encode(), hashlib.sha256).digest()
    token = f"{unsigned}&s={quote(base64.b64encode(digest))}"
    assert check_sas(token, KEY, BASE, NOW) is None
    assert check_sas(token, KEY, BASE, datetime(2026, 1, 2, 15, 4, 6, tzinfo=UTC)) is not None


def test_a_url_safe_topic_key_from_an_older_state_folder_is_replaced_by_base64(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    state = EmulatorState(state_dir=tmp_path, store=store, faults=Faults(store), ca_path=tmp_path / "ca.pem")
    store.set_setting(TOPIC_KEY_SETTING, "not-base64_at-all_-_")
    key = ensure_topic_key(state)
    assert len(key) == 44 and base64.b64decode(key, validate=True)
    assert ensure_topic_key(state) == key == state.topic_key  # stable once valid
    store.close()


def test_events_keep_their_exact_text_and_filters_default_to_case_insensitive() -> None:
    text = '[ {"id":"1","source":"/s","type":"T","specversion":"1.0","data":1.50} ,{"id":"2","source":"/s",'
    text += '"type":"T","specversion":"1.0"}]'
    first, second = parse_batch(CLOUD_EVENTS, "application/cloudevents-batch+json", text)
    assert first.raw == '{"id":"1","source":"/s","type":"T","specversion":"1.0","data":1.50}'
    assert second.attributes(CLOUD_EVENTS) == ("2", "T", "")
    assert matches({"subjectBeginsWith": "Targets/"}, "T", "targets/a")
    assert not matches({"subjectBeginsWith": "Targets/", "isSubjectCaseSensitive": True}, "T", "targets/a")


def test_event_grid_events_are_translated_for_cloud_events_subscribers() -> None:
    event = {"id": "1", "subject": "s", "eventType": "E", "eventTime": "2026-01-01T00:00:00Z", "data": {}}
    cloud = json.loads(delivery_body(EVENT_GRID, CLOUD_EVENTS, {**event, "dataVersion": "1"}, "/topic"))
    assert cloud == {
        "id": "1",
        "source": "/topic",
        "specversion": "1.0",
        "type": "E",
        "subject": "s",
        "time": "2026-01-01T00:00:00Z",
        "data": {},
    }
