"""Warm a replica before students reach it: wait until it is healthy, then open every page once.

    python deploy/warm.py [--url http://127.0.0.1:8501] [--wait 300]

One session through the real WebSocket protocol (benchmarks/stclient.py) visits every page of the
app's navigation in English and then in Chinese: the process imports everything the pages use
(pandas, pyarrow, plotly, matplotlib; importing them from 30 first sessions at once races), loads
its default model into the shared cache and traces the default image, so the first students on a
new replica do not pay the cold start. It needs no app code: it is what a first visitor does.
deploy/local.py runs it before nginx sends students to a replica; the Kubernetes Deployment runs it
as the container's postStart hook (probes start once it has finished). Exits non-zero if a page
shows an error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from stclient import Session, wait_healthy  # noqa: E402


async def warm(url: str, *, timeout: float = 300.0) -> list[str]:
    """Visit every page once per language; the errors seen (empty: warm and well)."""
    errors = []
    for locale in ("en-US", "zh-CN"):
        s = Session(url, locale=locale, timeout=timeout, fetch_media=False)
        try:
            errors += (await s.open()).errors
            for page in list(s.pages)[1:]:
                errors += [f"{page}: {e}" for e in (await s.goto(page)).errors]
        finally:
            await s.close()
    return errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8501")
    ap.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the server to start")
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    wait_healthy(a.url, seconds=a.wait)
    errors = asyncio.run(warm(a.url))
    print(f"warmed {a.url} in {time.monotonic() - t0:.1f} s" + (f"; {len(errors)} errors" if errors else ""))
    for e in errors:
        print("  " + e[:300])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
