"""The worker process: ``python -m devhost.worker.proxy --app DIR --fd N``, devhost's proxy worker.

As on Azure, where the host starts the Python worker as a process of its own and speaks to it over one
stream, devhost starts this process per app: Azure's runtime (``azure-functions-runtime``) loads the app
here, and every orchestrator episode and activity runs here, on this process's interpreter and core.
What it does is what Azure's proxy worker (azure-functions-python-worker, ``workers/proxy_worker/
dispatcher.py``) does over gRPC:
- each request from the host runs as its own task on this process's loop (``devhost.worker.dispatch``),
  and its answer goes back when it is ready, so invocations overlap;
- logging goes to the host as ``RpcLog`` messages, root logger at INFO, with the proxy's level mapping,
  and the host writes them to its log (``Dispatcher.on_logging``);
- the worker lives only as long as its stream: when the host closes it or dies, the worker exits at
  once, as a worker does when its host goes (a SIGINT meant for the host, such as Ctrl+C in a terminal,
  is left to the host).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from devhost.logs import quiet_libraries
from devhost.worker.channel import Channel, ChannelClosed
from devhost.worker.dispatch import dispatch, failure_answer, put_app_first
from devhost.worker.protos import protos


def rpc_level(levelno: int) -> int:
    """Python's level as RpcLog's, as the proxy maps it."""
    for threshold, name in (
        (logging.CRITICAL, "Critical"),
        (logging.ERROR, "Error"),
        (logging.WARNING, "Warning"),
        (logging.INFO, "Information"),
        (logging.DEBUG, "Debug"),
    ):
        if levelno >= threshold:
            return int(getattr(protos.RpcLog, name))
    return int(getattr(protos.RpcLog, "None"))


class RpcLogHandler(logging.Handler):
    """Every log record of the worker, to the host as an RpcLog (message formatted, traceback included)."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = protos.RpcLog(level=rpc_level(record.levelno), category=record.name, message=self.format(record))
            self.channel.send(protos.StreamingMessage(rpc_log=log))
        except ChannelClosed:
            pass  # the host has gone; this process is about to exit
        except Exception:
            self.handleError(record)


class ProxyWorker:
    def __init__(self, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.loop = loop
        self._tasks: set[asyncio.Task[None]] = set()

    def read_forever(self) -> None:
        """On its own thread, as the proxy polls gRPC: each request becomes a task on the loop."""
        try:
            while True:
                message = self.channel.receive()
                self.loop.call_soon_threadsafe(self._start, message)
        except ChannelClosed:
            pass
        except BaseException:  # a broken frame: say so on the console, the stream is unusable
            traceback.print_exc()
        _exit_now()

    def _start(self, message: Any) -> None:
        task = self.loop.create_task(self._answer(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, message: Any) -> None:
        try:
            response = await dispatch(message)
        except Exception as exc:
            logging.getLogger("devhost.worker").error(
                "the worker could not take a host request: %s", type(exc).__name__
            )
            response = failure_answer(message, exc)
            if response is None:
                return  # nothing the host waits on
        try:
            self.channel.send(response)
        except ChannelClosed:
            _exit_now()


def _exit_now() -> None:
    """The stream is gone: nothing can be answered any more (an activity still running is lost, as it is
    when a worker's host goes). No interpreter shutdown: it would wait on the runtime's threads."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def run(channel: Channel, app_dir: Path) -> None:
    put_app_first(app_dir)
    worker = ProxyWorker(channel, asyncio.get_running_loop())
    threading.Thread(target=worker.read_forever, name="host-stream", daemon=True).start()
    await asyncio.Event().wait()  # the reader ends the process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.worker.proxy")
    parser.add_argument("--app", type=Path, required=True, help="folder holding function_app.py")
    parser.add_argument("--fd", type=int, required=True, help="this end of the host's socket pair")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=args.fd))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(RpcLogHandler(channel))
    quiet_libraries()
    asyncio.run(run(channel, args.app.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
