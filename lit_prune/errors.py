"""The error types for problems in what the user asked for, as opposed to failures of the program."""

from __future__ import annotations

__all__ = ["UserError", "UserTypeError"]


class UserError(ValueError):
    """A problem in the user's input: an option value, a file, a name or data that is not there.

    The ``lit-prune`` command prints its message in a few lines and exits with status 2; any
    other exception is a failure of the program (status 1). It subclasses ``ValueError`` so code
    that catches bad values keeps working.
    """


class UserTypeError(UserError, TypeError):
    """A user's option of the wrong type, such as text where a number belongs.

    A :class:`UserError` (exit status 2) that is also a ``TypeError``, so code that catches
    wrong types keeps working.
    """
