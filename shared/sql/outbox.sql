-- The way out and the way in, the same in every service database.
--
-- outbox: one row per event this service emits, written in the same local
--   transaction as the business rows. Debezium's EventRouter reads committed
--   INSERTs from the WAL (the publication carries inserts only) and publishes
--   each to events.<aggregate_type>, key = aggregate_id (the order id), value =
--   payload, headers id / eventType / sagaId / causationId / traceparent / signature /
--   tracestate.
--   Rows stay for a retention window (inspectable, and the source of the
--   "committed" time of the CDC hop), then are purged (shared/retention.py);
--   purges never stream.
--
-- inbox: one row per (consumer, event id) handled. Its primary key turns a
--   redelivered event into a no-op: the handler's transaction inserts it first.
CREATE TABLE IF NOT EXISTS outbox (
    id             uuid        PRIMARY KEY,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    saga_id        text        NOT NULL,
    causation_id   text        NOT NULL DEFAULT '',
    traceparent    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS outbox_created_at ON outbox (created_at);
-- signature: the emitting service's Ed25519 signature of the event (shared/auth.py),
--   published as the `signature` header; consumers act only on events their owner signed.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS signature text NOT NULL DEFAULT '';
-- tracestate: the W3C tracestate that goes with traceparent ('' for none; shared/tracing.py),
--   published as the `tracestate` header.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS tracestate text NOT NULL DEFAULT '';

CREATE TABLE IF NOT EXISTS inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    saga_id      text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at);

-- dead_letters: a record this service could not handle (undecodable, invalid, or a
--   handler that failed deterministically). Written together with a DEAD_LETTER
--   outbox row routed to events.deadletter, so dead letters too leave only through
--   the outbox. One row per (consumer, topic, partition, offset): a redelivered
--   poison record is dead-lettered once. `saga dlq replay ID` runs the stored
--   record again (shared/dead_letter.py).
--   The record's own bytes live in bytea columns (key_bytes, value_bytes,
--   header_names/header_values), each cut at a cap (`cut`), with the whole value's
--   size and SHA-256; message_key, headers and raw_value hold previews only (valid
--   UTF-8, no NUL, bounded), and headers is a JSON list of {"name", "value"}.
--   A `minimal` dead letter keeps only where the record was and why it failed.
CREATE TABLE IF NOT EXISTS dead_letters (
    id           uuid        PRIMARY KEY,
    consumer     text        NOT NULL,
    topic        text        NOT NULL,
    kafka_partition integer  NOT NULL,
    kafka_offset bigint      NOT NULL,
    message_key  text,
    headers      jsonb       NOT NULL,
    raw_value    text,
    error        text        NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    replayed_at  timestamptz,
    UNIQUE (consumer, topic, kafka_partition, kafka_offset)
);
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS key_bytes     bytea;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS value_bytes   bytea;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS header_names  bytea[];
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS header_values bytea[];
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS value_size    bigint;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS value_sha256  text;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS cut           boolean NOT NULL DEFAULT false;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS minimal       boolean NOT NULL DEFAULT false;

-- debezium_heartbeat: Debezium's `heartbeat.action.query` inserts one row here
--   every heartbeat. The table is in the connector's publication, so even while
--   this database writes no outbox rows its slot receives a change, confirms a
--   newer LSN and lets PostgreSQL recycle WAL that other databases wrote. Its
--   change events are dropped by the connector (a Filter before the EventRouter);
--   the publication carries INSERTs only, so the purge of old rows (by this
--   service, with the outbox) never streams. The debezium role may INSERT here
--   and nothing else.
CREATE TABLE IF NOT EXISTS debezium_heartbeat (
    beat_at timestamptz PRIMARY KEY DEFAULT clock_timestamp()
);
