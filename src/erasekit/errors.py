"""Errors that describe bad user input. The CLI prints them as one line and exits with status 2."""


class UserError(ValueError):
    """Bad input from the user: a missing file, a malformed CSV, an unknown model, ..."""


class PromptTooLongError(UserError):
    """A prompt has more tokens than the text encoder's fixed maximum."""
