"""Event Grid's basic-topic send() passes our per-request keywords to every event's model, which warns once
per keyword per event; the publisher drops exactly those warnings, however the record arrives."""

from __future__ import annotations

import logging

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridPublisherClient

from activities import call_budget
from activities.clients import EventPublisher


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def noisy() -> _Collect:
    client = EventGridPublisherClient("https://topic.invalid/api/events", AzureKeyCredential("unused"))
    EventPublisher(client, call_budget.request_kwargs(call_budget.CallBudget()))
    logger = logging.getLogger(EventPublisher.NOISY_LOGGER)
    collect = _Collect()
    logger.addHandler(collect)
    yield collect
    logger.removeHandler(collect)


def _warn(record_args: bool, attribute: str) -> None:
    logger = logging.getLogger(EventPublisher.NOISY_LOGGER)
    template = "%s is not a known attribute of class %s and will be ignored"
    if record_args:
        logger.warning(template, attribute, "CloudEvent")
    else:  # formatted before the logger's filters run, as the app's redacting record factory does
        logger.warning(template % (attribute, "CloudEvent"))


@pytest.mark.parametrize("record_args", [True, False], ids=["with args", "preformatted"])
def test_the_send_keyword_warnings_are_dropped(noisy: _Collect, record_args: bool) -> None:
    for keyword in call_budget.request_kwargs(call_budget.CallBudget()):
        _warn(record_args, keyword)
    assert noisy.messages == []


@pytest.mark.parametrize("record_args", [True, False], ids=["with args", "preformatted"])
def test_other_warnings_of_that_logger_still_pass(noisy: _Collect, record_args: bool) -> None:
    _warn(record_args, "subject_typo")
    logging.getLogger(EventPublisher.NOISY_LOGGER).warning("Readonly attribute id will be ignored in class X")
    assert len(noisy.messages) == 2
