"""Errors that describe bad user input. The CLI prints them as one line and exits with status 2."""


class UserError(ValueError):
    """Bad input from the user: a missing file, a malformed CSV, an unknown model, ..."""


class PromptTooLongError(UserError):
    """A prompt has more tokens than the text encoder's fixed maximum."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
