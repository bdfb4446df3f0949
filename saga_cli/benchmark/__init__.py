"""`saga bench`'s machinery, one concern per module.

    catalog      the benchmark's own SKUs and customers, the flow mix, order bodies
    load         open-loop order placement at a fixed arrival rate
    runner       one run: seed, load, drain, measure, check (RunResult → the JSON document)
    measure      e2e and per-hop latencies from the databases (read-only) and the topics
    invariants   I1–I6 over a set of sagas (also behind tests/support/invariants.py)
    resources    CPU seconds and peak memory per component (psutil)
    suites       --find-max (rate steps to saturation) and --compare (transports side by side)
    connectors   Debezium's connectors with default or tuned settings, or stopped for another publisher
    relay        baseline (c): a polling outbox relay (asyncpg, FOR UPDATE SKIP LOCKED, aiokafka)
    transport    each transport alone, with (d) publishing straight after the commit as the floor
    plot         the latency CDF/histogram PNG
    progress     the live line on stderr
    stats        percentiles
"""
