"""`saga tail --json` against the real topics: one JSON object per line for each event of a saga,
readable as it arrives (the way `saga tail --json | jq` reads it), from the Kafka named by
--bootstrap-server even when the environment names another."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.saga import new_customer, new_sku, place_order, seed_account, seed_stock, wait_for_status

pytestmark = pytest.mark.integration

SAGA = str(Path(sys.executable).parent / "saga")
CONFIRMED_SAGA = {"ORDER_CREATED", "INVENTORY_RESERVED", "PAYMENT_COMPLETED", "ORDER_CONFIRMED", "INVENTORY_COMMITTED"}
"""The events of a confirmed saga, on three topics (read in no particular order across them)."""


async def test_tail_json_gives_each_event_of_a_saga_as_one_json_line(services):
    sku, customer = new_sku(), new_customer()
    await seed_stock(sku, 5)
    await seed_account(customer, "100.00")
    order_id = await place_order(customer, {sku: 1}, "10.00")
    await wait_for_status(order_id, ["CONFIRMED"])

    env = {**os.environ, "SAGA_KAFKA_BOOTSTRAP": "127.0.0.1:1"}  # the option must win
    tail = subprocess.Popen(
        [SAGA, "tail", "--json", "--from-beginning", "--saga", order_id,
         "--bootstrap-server", services.settings.kafka_bootstrap],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in tail.stdout], daemon=True).start()
    seen: list[dict] = []
    try:
        deadline = time.monotonic() + 60
        while {event["event_type"] for event in seen} != CONFIRMED_SAGA:
            assert tail.poll() is None, f"saga tail ended: {tail.stderr.read()}"
            assert time.monotonic() < deadline, f"saw {[event['event_type'] for event in seen]} of saga {order_id}"
            try:
                seen.append(json.loads(lines.get(timeout=0.5)))  # each line is one whole JSON document
            except queue.Empty:
                pass
    finally:
        tail.send_signal(signal.SIGINT)  # Ctrl-C is how tail ends
        tail.wait(timeout=30)
    assert tail.returncode == 0, tail.stderr.read()
    assert len(seen) == len(CONFIRMED_SAGA)  # each event once
    for event in seen:
        assert event["key"] == order_id and event["headers"]["sagaId"] == order_id
        assert event["value"]["order_id"] == order_id and event["value"]["event_type"] == event["event_type"]
        assert event["topic"].startswith("events.") and event["offset"] >= 0 and event["timestamp"].endswith("Z")
