"""CI keeps the linked, signing meter inside its heap budgets on the 32-bit interpreter (docs/performance.md,
"Heap on a board"): one run of the bench's workload (meterkit.bench.heap: a real concentrator on loopback,
readings, profile rows, events, three commands) in a heap capped at the budget must pass, with the meter's code
loaded from .mpy and with it frozen. A meter that needs more than its budget fails here. The same workload with a
signed firmware update delivered, activated and confirmed (meterkit.bench.fwheap) must pass frozen, as a board
without PSRAM runs it, in its own budget."""

from __future__ import annotations

import os
import re

import pytest

from meterkit.bench import fwheap as F
from meterkit.bench import heap as H
from meterkit.device import mp32
from meterkit.device.toolchain import repo_root

DOC = repo_root() / "docs" / "performance.md"
# the budgets as docs/performance.md states them (its lines may wrap anywhere)
DOC_BUDGET = {"mpy": r"from\s+\.mpy\s+≤\s+(\d+)\s+KiB", "frozen": r"beside\s+the\s+code\s+≤\s+(\d+)\s+KiB"}
DOC_UPDATE_BUDGET = r"the\s+update\s+path\s+\(frozen\)\s+≤\s+(\d+)\s+KiB"


@pytest.fixture(scope="module")
def meter(tmp_path_factory):
    try:
        mp32.ensure()
    except mp32.Unavailable as e:
        if os.environ.get("METERKIT_MP32") == "require":
            pytest.fail(f"the 32-bit interpreter is required here: {e}")
        pytest.skip(f"the 32-bit suite did not run: {e}")
    return H.provision(tmp_path_factory.mktemp("heap") / "meter")


@pytest.mark.mp32
@pytest.mark.parametrize("mode", H.MODES)
def test_the_linked_signing_meter_runs_within_its_heap_budget(meter, mode):
    budget = H.BUDGET_KIB[mode]
    r = H.run_once(meter, mode, budget, H.Workload(hours=1.0))
    assert r.ok, (f"the meter ({mode}) no longer runs in its budget of {budget} KiB (docs/performance.md): "
                  f"{r.why}")


@pytest.mark.parametrize("mode", H.MODES)
def test_the_budgets_are_the_ones_the_docs_state(mode):
    found = re.findall(DOC_BUDGET[mode], DOC.read_text())
    assert found == [str(H.BUDGET_KIB[mode])], (mode, found, H.BUDGET_KIB[mode])


@pytest.mark.mp32
def test_the_whole_update_path_runs_within_its_heap_budget(meter):
    budget = F.UPDATE_BUDGET_KIB["frozen"]
    r = H.run_once(meter, "frozen", budget, H.Workload(hours=1.0), kind=F.UpdateRun)
    assert r.ok, (f"the meter (frozen) no longer takes a firmware update in its budget of {budget} KiB "
                  f"(docs/performance.md): {r.why}")


def test_the_update_budget_is_the_one_the_docs_state():
    assert re.findall(DOC_UPDATE_BUDGET, DOC.read_text()) == [str(F.UPDATE_BUDGET_KIB["frozen"])]
