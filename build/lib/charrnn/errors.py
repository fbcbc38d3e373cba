"""The one exception type that means "the user gave us something we cannot use"."""


class UserError(Exception):
    """Bad input: the CLI prints the message on one line and exits non-zero, with no traceback."""
