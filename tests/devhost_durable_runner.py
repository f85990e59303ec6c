"""Hosts only the durable engine + its routes, for crash tests: ``python tests/devhost_durable_runner.py
<state_dir> <ready_file> [--clock virtual|real]``. Writes ``{"url", "rpcBaseUrl", "pid", "binding"}`` to
ready_file once serving;
runs until killed (SIGKILL is the point) or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devhost.app_loader import load_app  # noqa: E402
from devhost.durable.engine import DurableEngine  # noqa: E402

MASTER_KEY = "runner-master-key"
SYSTEM_KEY = "runner-durabletask-key"


async def main(state_dir: Path, ready_file: Path, clock: str) -> None:
    engine = DurableEngine(load_app(ROOT / "tests" / "devhost_app"), state_dir, clock=clock, idle_grace=0.05)
    app = web.Application()
    engine.add_routes(app, master_key=MASTER_KEY, system_key=SYSTEM_KEY)
    rpc = engine.rpc_listener(system_key=SYSTEM_KEY, first_port=0)
    rpc_url = await rpc.start()
    await engine.start()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    tmp = ready_file.with_suffix(".tmp")
    binding = engine.client_binding_json(url, SYSTEM_KEY, rpc_url)
    tmp.write_text(json.dumps({"url": url, "rpcBaseUrl": rpc_url, "pid": os.getpid(), "binding": binding}))
    tmp.replace(ready_file)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await rpc.stop()
    await engine.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("ready_file", type=Path)
    parser.add_argument("--clock", default="virtual")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(args.state_dir, args.ready_file, args.clock))
