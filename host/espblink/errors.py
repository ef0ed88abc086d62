"""The one exception type a command turns into a plain message and a non-zero exit."""


class UserError(Exception):
    """Something the user can fix: the message says what was wrong and what to do next."""
