"""The one exception the CLI turns into a one-line message and a non-zero exit."""


class CliError(Exception):
    """A user-facing failure: its message is printed as one line on stderr, exit code
    `exit_code` (1 unless a subclass says otherwise)."""

    exit_code: int = 1
