"""The one exception the CLI turns into a one-line message and a non-zero exit."""


class CliError(Exception):
    """A user-facing failure: its message is printed as one line on stderr, exit code 1."""
