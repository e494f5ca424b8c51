"""The one exception type for bad input data.

Why a ``ValueError`` subclass: the CLI already turns ``ValueError`` into a one-line message without a
traceback, and callers that want to tell data problems apart from config problems can catch this.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data; the message names the file and, where known, the line and column."""
