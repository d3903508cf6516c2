"""The one exception type for bad user input: a one-line message naming what and where."""


class InputError(ValueError):
    """Bad input (file, row, field or option) detected before anything is written."""
