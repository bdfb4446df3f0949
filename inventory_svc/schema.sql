-- inventory_svc business tables (applied after shared/sql/outbox.sql; idempotent).
--
-- stock: per SKU, on hand = available + reserved + sold (I2); no count below zero.
-- reservations: one per order; RESERVED → RELEASED (C1) or RESERVED → COMMITTED (sold),
--   each move at most once; `items` is [{sku, quantity}].
CREATE TABLE IF NOT EXISTS stock (
    sku        text        PRIMARY KEY,
    available  bigint      NOT NULL DEFAULT 0 CHECK (available >= 0),
    reserved   bigint      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold       bigint      NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS reservations (
    reservation_id uuid        PRIMARY KEY,
    order_id       uuid        NOT NULL UNIQUE,
    status         text        NOT NULL CHECK (status IN ('RESERVED', 'RELEASED', 'COMMITTED')),
    items          jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
