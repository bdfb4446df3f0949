-- payment_svc business tables (applied after shared/sql/outbox.sql; idempotent: this whole file is
-- applied again when it changes, so every statement can run on a database that already has it).
--
-- accounts: one balance per customer, in one currency; never below zero.
-- payments: one row per order, every decision payment_svc took for it (payment_svc/domain.py):
--   CAPTURED  charged; → REFUNDED at most once (C3)
--   DECLINED  a refused charge with its reason: the decline's (insufficient_funds, limit_exceeded,
--             unknown_customer), or the void's when the order was given up before its reservation
--             came (cancelled_by_customer, deadline_exceeded; then voided_at is set too)
--   VOIDED    the order was given up (ORDER_CONFIRMATION_FAILED) before payment_svc saw its
--             reservation: no customer, amount or currency known yet; the reservation, when it
--             comes, is declined with `reason` (→ DECLINED)
--   The row, not only the inbox, guards against redelivery (docs/contract/invariants.md, I8): an
--   event of any age that meets a decided row changes nothing, so a declined or voided order is
--   never charged later. A void is a status of the same row rather than a table of its own so that
--   the charge and the void of one order meet on one key (order_id UNIQUE) and one lock (the saga
--   lock the unit of work takes, shared/uow.py).
--   Per customer (I3): balance_initial = balance + captured - refunded.
CREATE TABLE IF NOT EXISTS accounts (
    customer_id text          PRIMARY KEY,
    balance     numeric(12,2) NOT NULL CHECK (balance >= 0),
    currency    text          NOT NULL,
    updated_at  timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS payments (
    payment_id  uuid          PRIMARY KEY,
    order_id    uuid          NOT NULL UNIQUE,
    customer_id text,
    amount      numeric(12,2) CHECK (amount > 0),
    currency    text,
    status      text          NOT NULL,
    reason      text,
    detail      text,
    voided_at   timestamptz,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_customer_id ON payments (customer_id);

-- Databases created before voids: customer, amount and currency become optional (a void knows
-- none of them), the status list grows, and only a void may lack them.
ALTER TABLE payments ADD COLUMN IF NOT EXISTS voided_at timestamptz;
ALTER TABLE payments ALTER COLUMN customer_id DROP NOT NULL;
ALTER TABLE payments ALTER COLUMN amount DROP NOT NULL;
ALTER TABLE payments ALTER COLUMN currency DROP NOT NULL;
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('CAPTURED', 'REFUNDED', 'DECLINED', 'VOIDED'));
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_charge_known;
ALTER TABLE payments ADD CONSTRAINT payments_charge_known
    CHECK (status = 'VOIDED' OR (customer_id IS NOT NULL AND amount IS NOT NULL AND currency IS NOT NULL));
