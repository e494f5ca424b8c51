"""The one exception type for bad input data.

A :class:`~metarec_dist.errors.UserError` (a ``ValueError``): the CLI prints it as a one-line message
without a traceback, and callers that want to tell data problems apart from config problems can catch this.
"""

from __future__ import annotations

from metarec_dist.errors import UserError


class DataError(UserError):
    """Bad or missing input data; the message names the file and, where known, the line and column."""
