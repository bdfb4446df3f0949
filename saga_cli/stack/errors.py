from saga_cli.errors import CliError


class StackError(CliError):
    """A component could not be installed, started, reached or stopped; the message says which and where its log is."""
