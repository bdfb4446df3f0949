"""What authenticating events costs: one signature per emitted event, one verification per consumer
that acts on it (shared/auth.py), timed on a typical ORDER_CREATED.

    python -m saga_cli.benchmark.signing [--runs 7] [--number 2000] [--json]

Keys are made in a temporary folder. Three figures, each the median (and the best) over `runs`
runs of `number` calls, in µs per call:

  sign            KeyRing.sign of the outbox row (what write_outbox does per emitted event)
  verify          KeyRing.authenticate of the same content (the signature checked, canonical
                  JSON rebuilt from the parsed payload)
  verify_record   what shared/consumer.authenticate does per record: parse the record's value
                  again, then verify

and the CPU of one happy saga's signing and verifying: 5 events signed; verified by the
consumers that handle them — ORDER_CREATED by order_svc (which adopts foreign ones, so checks
every one) and inventory_svc, INVENTORY_RESERVED by payment_svc, PAYMENT_COMPLETED by order_svc,
ORDER_CONFIRMED by inventory_svc, INVENTORY_COMMITTED by none: 5 verifications. A consumer skips
an event type it does not handle by its header, before authenticating.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import timeit
import uuid
from decimal import Decimal
from typing import Any

from shared import auth
from shared.auth import KeyRing
from shared.events import OrderCreated, encode_event, utc_now

SIGNED_PER_SAGA = 5
VERIFIED_PER_SAGA = 5
"""Per happy saga (module doc)."""


def order_created() -> dict[str, Any]:
    """A typical ORDER_CREATED payload (two items), as the outbox row holds it."""
    return encode_event(OrderCreated(
        order_id=uuid.uuid4(), occurred_at=utc_now(), customer_id="customer-0042",
        items=[{"sku": "WIDGET-7", "quantity": 2}, {"sku": "GADGET-13", "quantity": 1}],
        amount=Decimal("59.90"), currency="EUR",
    ))


def measure(runs: int = 7, number: int = 2000) -> dict[str, Any]:
    """{"sign_us", "verify_us", "verify_record_us"} (medians, µs per call), the same as
    "…_best_us" (the fastest run: what the call costs on an idle core), the saga's share
    {"per_saga_us"} (from the medians), and {"runs", "number", "payload_bytes"}. ValueError for
    runs or number below 1."""
    if runs < 1 or number < 1:
        raise ValueError("runs and number must be at least 1")
    payload = order_created()
    value = json.dumps(payload, separators=(",", ":")).encode()
    content = dict(event_id=str(uuid.uuid4()), event_type="ORDER_CREATED", saga_id=payload["order_id"],
                   causation_id="", payload=payload)
    with tempfile.TemporaryDirectory() as folder:
        auth.ensure_keys(folder)
        signer = KeyRing.load(folder, "order_svc")
        reader = KeyRing.load(folder, "inventory_svc")
    signature = signer.sign(**content)
    reader.authenticate("order_svc", signature, **content)  # it verifies, or the figures mean nothing

    def verify_record() -> None:
        """Verify the signature against the payload as a consumer has it: decoded from the record's JSON."""
        reader.authenticate("order_svc", signature, **{**content, "payload": json.loads(value)})

    timers = {
        "sign_us": lambda: signer.sign(**content),
        "verify_us": lambda: reader.authenticate("order_svc", signature, **content),
        "verify_record_us": verify_record,
    }
    figures: dict[str, Any] = {}
    for name, call in timers.items():
        call()
        per_call = [total / number * 1e6 for total in timeit.Timer(call).repeat(repeat=runs, number=number)]
        figures[name] = round(statistics.median(per_call), 1)
        figures[name.replace("_us", "_best_us")] = round(min(per_call), 1)
    figures["per_saga_us"] = round(SIGNED_PER_SAGA * figures["sign_us"] + VERIFIED_PER_SAGA * figures["verify_record_us"], 1)
    figures |= {"runs": runs, "number": number, "payload_bytes": len(value)}
    return figures


def main(argv: list[str] | None = None) -> None:
    """Print the figures (one JSON document with --json)."""
    parser = argparse.ArgumentParser(prog="python -m saga_cli.benchmark.signing", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure; the median is reported")
    parser.add_argument("--number", type=int, default=2000, help="calls per run")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    options = parser.parse_args(argv)
    if options.runs < 1 or options.number < 1:
        parser.error("--runs and --number must be at least 1")
    figures = measure(options.runs, options.number)
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    if options.json:
        print(json.dumps(figures))
        return
    print(f"ORDER_CREATED of {figures['payload_bytes']} bytes, median of {options.runs} runs × {options.number} calls "
          f"(1-min load {figures['load_average_1m']})")
    for label, name in (("sign", "sign"), ("verify", "verify"), ("parse + verify", "verify_record")):
        print(f"  {label:<20}{figures[f'{name}_us']:8.1f} µs  (best run {figures[f'{name}_best_us']:.1f} µs)")
    print(f"  per happy saga        {figures['per_saga_us']:8.1f} µs  "
          f"({SIGNED_PER_SAGA} signed, {VERIFIED_PER_SAGA} verified with parse)")


if __name__ == "__main__":
    main()
