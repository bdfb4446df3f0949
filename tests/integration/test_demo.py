"""`make demo`'s program against the running stack: the four flows end as the saga says, and it leaves running what it found running."""
from __future__ import annotations

import subprocess
import sys

import pytest

from saga_cli import services as service_processes

pytestmark = pytest.mark.integration


def test_demo_runs_the_four_flows_to_their_expected_outcomes(services):
    before = {c.name: c.find().pid for c in services.stack.components}
    result = subprocess.run([sys.executable, "-m", "saga_cli.demo"], capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for flow, status, reason in [
        ("1. happy path", "CONFIRMED", "—"),
        ("2. stock short (C1)", "CANCELLED", "out_of_stock"),
        ("3. payment declined (C2, C1)", "CANCELLED", "insufficient_funds"),
        ("4. cancelled after payment (C3, C2, C1)", "CANCELLED", "cancelled_by_customer"),
    ]:
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"│ {flow}"))
        assert status in row and reason in row and "yes" in row, row
    for event in ("INVENTORY_COMMITTED", "INVENTORY_REJECTED", "PAYMENT_FAILED", "ORDER_CONFIRMATION_FAILED", "PAYMENT_REFUNDED"):
        assert event in result.stdout
    # it found everything running, so it stopped nothing
    assert {c.name: c.find().pid for c in services.stack.components} == before
    assert all(s.find() is not None for s in service_processes.services(services.settings))
