"""The one exception type for errors a user can cause (bad input, missing files, no network)."""


class SdvizError(Exception):
    """An error with a message that says what to do. The CLI and UI show it without a traceback."""
