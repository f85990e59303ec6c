"""How many requests per second one emulator process (one core, one asyncio loop) serves.

Starts `python -m emulators serve` on a fresh state folder, seeds a function app and a secret, then
drives each operation from this process with an aiohttp client at a fixed concurrency for a fixed
time over HTTPS with keep-alive. Prints a table; exits non-zero on any unexpected status.

    .venv/bin/python benchmarks/emulator_throughput.py [--seconds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emulators.core.local_identity import LOCAL_EMULATORS, LocalTokenCredential  # noqa: E402
from tests.emulator_process import running_emulator  # noqa: E402

SUB, RG, SITE = "00000000-0000-0000-0000-0000000000b1", "bench-rg", "bench-app"
SITE_PATH = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/sites/{SITE}"


def token(audience: str) -> str:
    return LocalTokenCredential("bench-oid", "bench", endpoint=LOCAL_EMULATORS).get_token(f"{audience}/.default").token


async def drive(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    seconds: float,
    concurrency: int,
) -> tuple[int, float, int]:
    """Returns (requests, elapsed, unexpected statuses)."""
    deadline = time.perf_counter() + seconds
    done = 0
    bad = 0

    async def worker() -> None:
        nonlocal done, bad
        while time.perf_counter() < deadline:
            async with session.request(method, url, headers=headers, data=body) as response:
                await response.read()
                done += 1
                if response.status >= 300:
                    bad += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started, bad


async def main(seconds: float, concurrency: int) -> int:
    with tempfile.TemporaryDirectory() as tmp, running_emulator(Path(tmp)) as emu:
        emu.control("PUT", f"sites/{SUB}/{RG}/{SITE}", json={"functions": ["probe"]}).raise_for_status()
        ctx = ssl.create_default_context(cafile=emu.ca)
        arm = {"Authorization": f"Bearer {token('https://management.azure.com')}"}
        kv = {"Authorization": f"Bearer {token('https://vault.azure.net')}", "Content-Type": "application/json"}
        logs = {"Authorization": f"Bearer {token('https://api.loganalytics.io')}", "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            put = await session.put(
                f"{emu.url}/secrets/bench?api-version=2026-04-01", headers=kv, data=json.dumps({"value": "v" * 56})
            )
            assert put.status == 200, await put.text()
            query = json.dumps({"query": "AppRequests | where ResultCode == '401' | count", "timespan": "PT1H"})
            cases = [
                ("control health (no auth)", "GET", f"{emu.url}/_emulator/health", {}, None),
                (
                    "ARM list_host_keys",
                    "POST",
                    f"{emu.url}{SITE_PATH}/host/default/listkeys?api-version=2025-05-01",
                    arm,
                    None,
                ),
                ("Key Vault get_secret", "GET", f"{emu.url}/secrets/bench/?api-version=2026-04-01", kv, None),
                (
                    "Log Analytics query",
                    "POST",
                    f"{emu.url}/v1/workspaces/{emu.endpoints['workspaceId']}/query",
                    logs,
                    query.encode(),
                ),
            ]
            print(f"{'operation':<28} {'requests':>9} {'req/s':>9}   (concurrency {concurrency}, {seconds:.0f} s each)")
            failures = 0
            for name, method, url, headers, body in cases:
                count, elapsed, bad = await drive(session, method, url, headers, body, seconds, concurrency)
                failures += bad
                note = f"  ({bad} unexpected statuses)" if bad else ""
                print(f"{name:<28} {count:>9} {count / elapsed:>9.0f}{note}")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.seconds, args.concurrency)))
