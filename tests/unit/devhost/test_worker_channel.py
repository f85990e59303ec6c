"""The host-worker stream: whole StreamingMessages each way, a clear end, and the proxy's log levels."""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from devhost.worker.channel import Channel, ChannelClosed
from devhost.worker.dispatch import failure_answer
from devhost.worker.process import python_level
from devhost.worker.protos import protos
from devhost.worker.proxy import rpc_level


def test_messages_arrive_whole_and_in_order_even_when_larger_than_a_socket_buffer() -> None:
    a, b = socket.socketpair()
    host, worker = Channel(a), Channel(b)
    big = "x" * (3 << 20)  # a long orchestration history is megabytes of JSON
    messages = [
        protos.StreamingMessage(request_id=str(i), invocation_request=protos.InvocationRequest(invocation_id=big))
        for i in range(3)
    ]
    sender = threading.Thread(target=lambda: [host.send(m) for m in messages])
    sender.start()
    received = [worker.receive() for _ in messages]
    sender.join()
    assert [m.request_id for m in received] == ["0", "1", "2"]
    assert all(m.invocation_request.invocation_id == big for m in received)


def test_the_end_of_the_stream_is_a_channel_closed_not_a_hang() -> None:
    a, b = socket.socketpair()
    host, worker = Channel(a), Channel(b)
    host.close()
    with pytest.raises(ChannelClosed):
        worker.receive()
    with pytest.raises(ChannelClosed):
        worker.send(protos.StreamingMessage(request_id="late"))


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL])
def test_a_worker_log_keeps_its_level_across_the_stream(level: int) -> None:
    assert python_level(rpc_level(level)) == level


def test_a_request_the_runtime_raised_on_is_answered_as_failed_with_the_type_only() -> None:
    request = protos.StreamingMessage(request_id="r", invocation_request=protos.InvocationRequest(invocation_id="i"))
    answer = failure_answer(request, ValueError("key s3cr3t"))
    assert answer.invocation_response.invocation_id == "i"
    assert answer.invocation_response.result.status == protos.StatusResult.Failure
    assert "s3cr3t" not in str(answer) and "ValueError" in answer.invocation_response.result.exception.message


def test_a_message_nobody_waits_on_gets_no_failure_answer() -> None:
    assert failure_answer(protos.StreamingMessage(rpc_log=protos.RpcLog(message="m")), ValueError("x")) is None
