-- inventory_svc business tables (applied after shared/sql/outbox.sql; idempotent: this whole file
-- is applied again when it changes, so every statement can run on a database that already has it).
--
-- stock: per SKU, on hand = available + reserved + sold (I2); no count below zero.
-- reservations: one row per order, what inventory_svc decided for it (inventory_svc/domain.py):
--   RESERVED → RELEASED (C2) or RESERVED → COMMITTED (sold), each move at most once;
--   REJECTED: the order could not be reserved, `reason` (out_of_stock, unknown_sku) and
--   `rejected_skus` say why; it never held stock. `items` is the order's [{sku, quantity}].
--   The row, not only the inbox, guards against redelivery (docs/contract/invariants.md, I8):
--   an ORDER_CREATED of any age that meets a decided row changes nothing, so a rejected order
--   is never reserved later (say once the SKU is restocked). A rejection is a status of the
--   same row rather than a table of its own so that every decision about an order meets on one
--   key (order_id UNIQUE).
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
    status         text        NOT NULL,
    items          jsonb       NOT NULL,
    reason         text,
    rejected_skus  text[],
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Databases created before rejections were recorded.
ALTER TABLE reservations ADD COLUMN IF NOT EXISTS reason text;
ALTER TABLE reservations ADD COLUMN IF NOT EXISTS rejected_skus text[];
ALTER TABLE reservations DROP CONSTRAINT IF EXISTS reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('RESERVED', 'RELEASED', 'COMMITTED', 'REJECTED'));
