"""The native stack: PostgreSQL, Kafka (KRaft) and Kafka Connect with Debezium, as local processes.

`saga stack up` resolves what is missing (Maven jars), starts each component
that is not running, prepares databases, roles, topics and connectors, and
waits until each answers. `saga stack down` stops what it started. State,
logs and pid files live in one git-ignored folder of the checkout
(StackSettings.home, `.stack/` by default).
"""
from saga_cli.stack.config import StackSettings
from saga_cli.stack.errors import StackError
from saga_cli.stack.stack import Stack

__all__ = ["Stack", "StackError", "StackSettings"]
