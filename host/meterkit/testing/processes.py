"""The servers the tests start (HAProxy, Mosquitto), ended alike. May import: the standard library only."""

from __future__ import annotations

import subprocess


def end_process(proc: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if it is still there after grace_s; waited for either way (no zombie)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
