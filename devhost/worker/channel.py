"""The host-worker stream as length-prefixed ``StreamingMessage`` frames on a local socket.

On Azure the host and the worker speak gRPC's bidirectional ``FunctionRpc.EventStream`` of
``StreamingMessage`` (azure-functions-language-worker-protobuf, ``FunctionRpc.proto``). devhost carries
the same messages between its two processes over a socket pair instead, so no gRPC server is needed;
the messages, their order and who answers what are the protocol's.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Any

from devhost.worker.protos import protos

_LENGTH = struct.Struct(">I")


class ChannelClosed(ConnectionError):
    """The other end has gone: its process exited or closed the stream."""


class Channel:
    """One end of the stream; sends are serialised so any thread may send."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: Any) -> None:
        data = message.SerializeToString()
        try:
            with self._send_lock:
                self.sock.sendall(_LENGTH.pack(len(data)) + data)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None

    def receive(self) -> Any:
        """The next message; ChannelClosed at the end of the stream."""
        (length,) = _LENGTH.unpack(self._read(_LENGTH.size))
        message = protos.StreamingMessage()
        message.ParseFromString(self._read(length))
        return message

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            try:
                chunk = self.sock.recv(min(left, 1 << 20))
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if not chunk:
                raise ChannelClosed("end of stream")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # already shut down by the other end
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
