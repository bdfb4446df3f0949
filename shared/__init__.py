"""What the three services share.

    events      the event catalog: frozen pydantic models, decode_event / encode_event
    money       Money / Amount (two-place Decimals) and Currency (active ISO-4217 codes)
    topics      aggregate types → topics, message header names
    tracing     W3C traceparent: new trace per saga, a child span per hop
    uow         the unit of work: inbox + business rows + outbox in one transaction
    migrations  the idempotent schema step, and each service's schema files
    consumer    the consumer runtime: dedupe, retry, dead letters through the outbox
    service     a service process: Kafka agent, HTTP views, health, maintenance timers
    retention   the periodic purge that keeps outbox, inbox and heartbeat tables bounded
    replication the replication slots' lag and retained WAL (for /metrics and the CLI)
    metrics     the Prometheus metrics
    logs        structured JSON log lines (structlog) for our loggers
    settings    one pydantic-settings class per service
    errors      the named errors (EventDecodeError, TransientError, DomainError)
    testing     throwaway migrated databases for tests
"""
