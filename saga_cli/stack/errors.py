from __future__ import annotations

from saga_cli.errors import CliError


class StackError(CliError):
    """A component could not be installed, started, reached or stopped; the message says which and where its log is."""


class ConnectUnavailable(StackError):
    """Kafka Connect's REST API does not answer, or answers that it cannot take the request yet (409 while
    its group rebalances, 5xx while the worker starts): worth asking again, unlike a refused config."""


class ConnectorsFailed(StackError):
    """One or more connectors FAILED: `failures` (saga_cli.stack.connect.ConnectorFailure) says which, and the
    message gives one line per connector with what is wrong and the command that brings it back."""

    def __init__(self, failures: list, hints: list[str]):
        super().__init__("\n".join(hints))
        self.failures = failures
