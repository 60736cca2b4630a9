"""CPU time of processes and of the whole machine, from /proc (Linux): where the cores went during a bench.

    groups = {"concentrator c1": lambda: [pid], "PostgreSQL": lambda: tree(postmaster_pid), ...}
    a = sample(groups); ...; b = sample(groups)
    used = spent(a, b)   # {group: CPU seconds, ..., "machine": busy CPU seconds of all cores}

A group is a function returning its pids now (a process tree's children come and go), so a sample takes what
each process has used so far: utime + stime of /proc/PID/stat. A process that exits between two samples takes
its time with it (the bench samples while every process it measures is alive). The machine's busy time is
/proc/stat's first line less idle and iowait: beside our groups it shows what other users of the machine and
the kernel (loopback TCP, softirqs) took.

May import: the standard library only.
"""

from __future__ import annotations

import os
from collections.abc import Callable

_TICK = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on; the name may hold spaces


def cpu_s(pid: int) -> float:
    """utime + stime of one process so far, seconds (0 when it is gone)."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / _TICK if f else 0.0


def tree(root: int | None) -> list[int]:
    """root and every process below it now."""
    if root is None:
        return []
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat(int(name))
            if f:
                parent[int(name)] = int(f[1])
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / _TICK


def sample(groups: dict[str, Callable[[], list[int]]]) -> dict[str, float]:
    out = {name: sum(cpu_s(p) for p in pids()) for name, pids in groups.items()}
    out[MACHINE] = machine_busy_s()
    return out


def spent(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """CPU seconds each group (and the machine) used between samples a and b."""
    return {k: round(b[k] - a[k], 3) for k in a}
