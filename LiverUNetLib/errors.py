"""One exception type for every problem a user can fix.

The message names what is wrong and what to do; the command line prints it as one line and the
Slicer panel shows it in a dialog. Programming errors stay ordinary Python exceptions.
"""


class LiverUNetError(Exception):
    """A problem with the user's input, files, model or environment, explained in plain words."""


class CancelledError(LiverUNetError):
    """The user cancelled the job; nothing was written."""

    def __init__(self, message: str = "Cancelled by the user; nothing was changed.") -> None:
        super().__init__(message)
