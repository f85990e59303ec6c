"""The worker on a process of its own, as on Azure: devhost starts it, then speaks to it over one stream.

The Functions host starts the Python worker as a child process per app and exchanges ``StreamingMessage``
with it (azure-functions-host, ``src/WebJobs.Script/Workers/ProcessManagement/WorkerProcess.cs`` and
``Rpc/GrpcWorkerChannel.cs``). devhost does the same with ``python -m devhost.worker.proxy``: app code and
Azure's runtime run there, on the second core, while devhost's process keeps the host, the durable
engine and the emulators. Answers are matched as the host matches them: an invocation's by its
invocation id, a start-up step's by its kind (one is asked at a time). The worker's ``RpcLog`` messages
are written to devhost's log under their category.

Where devhost differs: the stream is a socket pair, not gRPC (``devhost.worker.channel``); a worker that
exits is not restarted (the host restarts it), so every call after that fails with ``WorkerExited``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from devhost.worker.channel import Channel, ChannelClosed
from devhost.worker.protos import protos
from devhost.worker.runtime import WorkerHost, WorkerInitError

log = logging.getLogger("devhost.worker")
DEVHOST_ROOT = Path(__file__).resolve().parents[2]  # the folder `devhost` is imported from
_PY_LEVELS = {
    "Trace": logging.DEBUG,
    "Debug": logging.DEBUG,
    "Information": logging.INFO,
    "Warning": logging.WARNING,
    "Error": logging.ERROR,
    "Critical": logging.CRITICAL,
}


class WorkerExited(RuntimeError):
    """The worker process is gone; devhost does not restart it."""


def python_level(rpc_level: int) -> int:
    return _PY_LEVELS.get(protos.RpcLog.Level.Name(rpc_level), logging.INFO)


class WorkerProcess(WorkerHost):
    def __init__(self, app_dir: str | Path) -> None:
        super().__init__(app_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._pending: dict[str, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()
        self._gone: str | None = None  # why no request can be answered any more
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _launch(self) -> None:
        host_end, worker_end = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(DEVHOST_ROOT), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "devhost.worker.proxy", "--app", str(self.app_dir)]
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed arguments
                [*command, "--fd", str(worker_end.fileno())], pass_fds=[worker_end.fileno()], env=env
            )
        finally:
            worker_end.close()
        self._channel = Channel(host_end)
        threading.Thread(target=self._read_forever, name="worker-stream", daemon=True).start()
        log.info("Started the worker process %d for %s", self.process.pid, self.app_dir)

    def _submit(self, message: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        key = _request_key(message)
        with self._lock:
            if self._gone:
                raise WorkerExited(self._gone)
            self._pending[key] = future
        try:
            self._stream().send(message)
        except ChannelClosed:
            with self._lock:
                self._pending.pop(key, None)
            raise WorkerExited(self._gone or f"the worker process for {self.app_dir} has stopped") from None
        return future

    def _stream(self) -> Channel:
        if self._channel is None:
            raise WorkerExited(f"the worker process for {self.app_dir} was never started")
        return self._channel

    def _call(self, message: Any) -> Any:
        try:
            return super()._call(message)
        except WorkerExited as exc:
            step = message.WhichOneof("content").removesuffix("_request").replace("_", " ")
            raise WorkerInitError(step, str(exc) or "the worker process stopped") from None

    def _read_forever(self) -> None:
        try:
            while True:
                message = self._stream().receive()
                if message.WhichOneof("content") == "rpc_log":
                    entry = message.rpc_log
                    logging.getLogger(entry.category or "Function").log(python_level(entry.level), "%s", entry.message)
                    continue
                with self._lock:
                    future = self._pending.pop(_answer_key(message), None)
                if future is not None and not future.done():
                    future.set_result(message)
        except ChannelClosed:
            pass
        self._end_of_stream()

    def _end_of_stream(self) -> None:
        code = self.process.wait() if self.process else None
        reason = f"the worker process for {self.app_dir} exited with code {code}"
        with self._lock:
            self._gone = reason
            pending, self._pending = list(self._pending.values()), {}
        if not self._closing:
            log.error("%s; devhost does not restart it: restart devhost", reason)
        for future in pending:
            if not future.done():
                future.set_exception(WorkerExited(reason))

    def close(self) -> None:
        self._closing = True
        if self._channel is not None:
            self._channel.close()  # the worker exits at the end of its stream
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _request_key(message: Any) -> str:
    if message.WhichOneof("content") == "invocation_request":
        return "invocation:" + message.invocation_request.invocation_id
    return str(message.WhichOneof("content")).removesuffix("_request")


def _answer_key(message: Any) -> str:
    if message.WhichOneof("content") == "invocation_response":
        return "invocation:" + message.invocation_response.invocation_id
    kind = str(message.WhichOneof("content")).removesuffix("_response")
    return "functions_metadata" if kind == "function_metadata" else kind
