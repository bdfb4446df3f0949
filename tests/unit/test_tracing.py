"""W3C traceparent: a new trace per saga, a child span per hop, malformed headers replaced."""
from __future__ import annotations

import pytest

from shared.tracing import child_traceparent, new_traceparent, parse_traceparent, trace_id_of

pytestmark = pytest.mark.unit

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_new_trace_is_valid_and_sampled():
    context = parse_traceparent(new_traceparent())
    assert context is not None
    assert context.flags == "01"
    assert new_traceparent() != new_traceparent()


def test_a_child_keeps_the_trace_and_flags_and_gets_a_new_span():
    child = parse_traceparent(child_traceparent(VALID))
    assert child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.span_id != "00f067aa0ba902b7"
    assert child.flags == "01"


def test_unsampled_stays_unsampled():
    assert child_traceparent(VALID[:-2] + "00").endswith("-00")


def test_a_chain_of_hops_shares_one_trace_id():
    header = new_traceparent()
    trace = trace_id_of(header)
    spans = set()
    for _ in range(5):
        header = child_traceparent(header)
        assert trace_id_of(header) == trace
        spans.add(parse_traceparent(header).span_id)
    assert len(spans) == 5


def test_bytes_headers_are_understood():
    assert trace_id_of(VALID.encode()) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "bad",
    [
        None, "", b"\xff", "garbage",
        VALID.upper(),
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        VALID + "-extra",  # version 00 has exactly four fields
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    ],
)
def test_malformed_headers_parse_to_none_and_start_a_new_trace(bad):
    assert parse_traceparent(bad) is None
    replacement = child_traceparent(bad)
    assert parse_traceparent(replacement) is not None


def test_a_future_version_is_read_by_its_first_four_fields():
    future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever"
    assert trace_id_of(future) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child_traceparent(future).startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")


# --- tracestate: carried with the traceparent, dropped when it cannot be parsed ------------------
from shared.tracing import TraceHeaders, valid_tracestate  # noqa: E402


@pytest.mark.parametrize("value, kept", [
    ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    (" rojo=1 ,\tcongo=2 ,", "rojo=1,congo=2"),
    (b"tenant@vendor=x", "tenant@vendor=x"),
    (None, ""), ("", ""),
    ("rojo=1,rojo=2", ""),  # a key twice
    ("Rojo=1", ""),  # keys are lower case
    ("rojo", ""), ("rojo=a,b", ""), ("rojo=a=b", ""),
    ("k=" + "v" * 600, ""),  # over 512 characters
    (",".join(f"k{n}=v" for n in range(33)), ""),  # over 32 members
    ("rojo=caf\u00e9", ""),
])
def test_a_tracestate_is_kept_only_when_it_is_a_valid_list(value, kept):
    assert valid_tracestate(value) == kept


def test_a_hop_without_spans_keeps_the_tracestate_of_a_valid_traceparent_only():
    child = TraceHeaders(VALID, "rojo=1").child()
    assert trace_id_of(child.traceparent) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert child.tracestate == "rojo=1"
    restarted = TraceHeaders("garbage", "rojo=1").child()
    assert parse_traceparent(restarted.traceparent) is not None and restarted.tracestate == ""
