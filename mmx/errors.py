"""One error hierarchy for mmx, and the exit codes the CLI maps it to.

Library code raises these; only the CLI's translation point (`mmx.cli`) prints
``Error: …`` / ``Hint: …`` on stderr and exits. Exit codes follow BSD sysexits(3),
as STYLE.md lists them.
"""

from __future__ import annotations

EX_OK = 0
EX_USAGE = 2  # typer/click's own usage errors
EX_DATAERR = 65  # bad input data
EX_NOINPUT = 66  # missing input
EX_UNAVAILABLE = 69  # service unavailable
EX_SOFTWARE = 70  # internal error
EX_IOERR = 74  # I/O error
EX_TEMPFAIL = 75  # temporary failure, retry
EX_INTERRUPTED = 130  # Ctrl-C


class MmxError(Exception):
    """Base of every error mmx reports to a user.

    ``message`` is one line saying what went wrong; ``hint`` optionally says what to do.
    ``exit_code`` is the process exit status the CLI uses for it.
    """

    exit_code: int = EX_SOFTWARE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class DataError(MmxError):
    """Input data is malformed (a bad JSON line, a corrupt file). Exit 65."""

    exit_code = EX_DATAERR


class InputMissingError(MmxError):
    """A named input does not exist or cannot be opened. Exit 66."""

    exit_code = EX_NOINPUT


class ServiceUnavailableError(MmxError):
    """A server we depend on refused us or is down (wrong key, no such host). Exit 69."""

    exit_code = EX_UNAVAILABLE


class InternalError(MmxError):
    """A bug in mmx. Exit 70."""

    exit_code = EX_SOFTWARE


class IOFailure(MmxError):
    """Reading or writing local files failed (disk full, permissions). Exit 74."""

    exit_code = EX_IOERR


class TemporaryFailure(MmxError):
    """Something that may work if tried again later (timeouts, busy database). Exit 75."""

    exit_code = EX_TEMPFAIL


class EventError(DataError):
    """An event line or record does not follow the envelope of DESIGN.md.

    ``line`` is the 1-based line number in its stream when known.
    """

    def __init__(self, message: str, *, line: int | None = None, hint: str | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message, hint=hint)
        self.reason = message


class LedgerError(MmxError):
    """The ledger file cannot be opened, migrated or written. Exit 74."""

    exit_code = EX_IOERR
