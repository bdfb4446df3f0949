-- payment_svc business tables (applied after shared/sql/outbox.sql; idempotent).
--
-- accounts: one balance per customer, in one currency; never below zero.
-- payments: at most one per order. CAPTURED → REFUNDED at most once (C3);
--   DECLINED records a refused charge with its reason. Per customer (I3):
--   balance_initial = balance + captured - refunded.
CREATE TABLE IF NOT EXISTS accounts (
    customer_id text          PRIMARY KEY,
    balance     numeric(12,2) NOT NULL CHECK (balance >= 0),
    currency    text          NOT NULL,
    updated_at  timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS payments (
    payment_id  uuid          PRIMARY KEY,
    order_id    uuid          NOT NULL UNIQUE,
    customer_id text          NOT NULL,
    amount      numeric(12,2) NOT NULL CHECK (amount > 0),
    currency    text          NOT NULL,
    status      text          NOT NULL CHECK (status IN ('CAPTURED', 'REFUNDED', 'DECLINED')),
    reason      text,
    detail      text,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    updated_at  timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_customer_id ON payments (customer_id);
