-- order_svc business tables (applied after shared/sql/outbox.sql; idempotent).
--
-- orders.status, the order's public state:
--   PENDING           placed, the saga is in flight
--   CANCEL_REQUESTED  the customer asked to cancel while in flight; decided when payment completes
--   CANCELLING        a root cause is known (payment failed, confirmation failed); waiting for the stock to be back
--   CONFIRMED         terminal: paid, stock committed
--   CANCELLED         terminal: no money and no stock held; `reason` is the root cause
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
