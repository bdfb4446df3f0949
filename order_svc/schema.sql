-- order_svc business tables (applied after shared/sql/outbox.sql; idempotent).
--
-- orders.status, the order's public state (order_svc/domain.py has the diagram):
--   PENDING           placed, the saga is in flight; given up at `deadline_at` by order_svc's timer
--   CANCELLING        given up (the customer cancelled, the deadline passed: ORDER_CONFIRMATION_FAILED
--                     sent) or its payment failed; waiting for the stock to be back or rejected
--   CONFIRMED         terminal: paid, stock committed
--   CANCELLED         terminal: no money and no stock held; `reason` is the root cause
--   CANCEL_REQUESTED  legacy: an earlier version's cancellation in flight; no order enters it any
--                     more, one left in it is given up like a cancelled PENDING order
-- order_history: one row per status change, `event_id` the event that records it.
CREATE TABLE IF NOT EXISTS orders (
    order_id            uuid          PRIMARY KEY,
    customer_id         text          NOT NULL,
    items               jsonb         NOT NULL,
    amount              numeric(12,2) NOT NULL CHECK (amount > 0),
    currency            text          NOT NULL,
    status              text          NOT NULL
                        CHECK (status IN ('PENDING', 'CANCEL_REQUESTED', 'CANCELLING', 'CONFIRMED', 'CANCELLED')),
    reason              text,
    cancel_requested_at timestamptz,
    stock_released_at   timestamptz,
    idempotency_key     text          UNIQUE,
    request_sha256      text          NOT NULL,
    created_at          timestamptz   NOT NULL DEFAULT now(),
    deadline_at         timestamptz   NOT NULL,
    updated_at          timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS order_history (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id uuid        NOT NULL REFERENCES orders (order_id),
    status   text        NOT NULL,
    reason   text,
    event_id uuid,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS order_history_order_id ON order_history (order_id, id);

-- Reading sagas by state (GET /orders?status=…, the saga gauges), newest first; and one
-- saga's own inbox and outbox rows (GET /orders/{id}/timeline).
CREATE INDEX IF NOT EXISTS orders_created_at ON orders (created_at);
CREATE INDEX IF NOT EXISTS orders_in_flight ON orders (created_at)
    WHERE status NOT IN ('CONFIRMED', 'CANCELLED');
CREATE INDEX IF NOT EXISTS inbox_saga_id ON inbox (saga_id);
CREATE INDEX IF NOT EXISTS outbox_saga_id ON outbox (saga_id);

-- The trace the saga started in (the traceparent of its ORDER_CREATED): what the order emits
-- later on its own — a cancellation, a deadline — continues it. Null for orders placed before.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS traceparent text;

-- The deadline timer's query (order_svc/repository.py, _OVERDUE_ORDERS): orders in flight by
-- deadline, small because an order leaves it as soon as it is confirmed or given up.
CREATE INDEX IF NOT EXISTS orders_overdue ON orders (deadline_at)
    WHERE status IN ('PENDING', 'CANCEL_REQUESTED');

-- Admission control (order_svc/admission.py) reads, every quarter second, how many sagas finished
-- over the last few seconds: orders that became CONFIRMED or CANCELLED, by the time they did.
CREATE INDEX IF NOT EXISTS orders_finished ON orders (updated_at)
    WHERE status IN ('CONFIRMED', 'CANCELLED');
