"""The driver's errors translated into the bridge's, once, here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg

from tradebridge.errors import ContentRefused, DatabaseUnavailable, StoreError

# What a lost, stopping or restarting database raises: the operation may be tried again once
# it is back (asyncpg's connection errors are InterfaceError or 08xxx; a server shutting
# down or starting up answers 57P01..57P03; a refused connection is an OSError; a pooled
# connection the server terminated while it was idle fails its next statement with
# InternalClientError "cannot switch to state …").
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    DatabaseUnavailable,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
)


def database_unavailable(error: BaseException) -> bool:
    """Return whether ``error`` says the database could not be reached (not a bad statement).

    ``QueryCanceledError`` (a statement timeout) is an operator intervention by code but a
    property of the statement, so it is not counted.
    """
    return isinstance(error, _UNAVAILABLE) and not isinstance(error, asyncpg.QueryCanceledError)


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Translate the driver's errors into the bridge's, once, here.

    Class 22 data exceptions and class 54 limits are ``ContentRefused`` (the input's fault);
    a lost or unreachable database is ``DatabaseUnavailable``; any other database error is a
    ``StoreError``. Messages carry the kind of error only: PostgreSQL's may quote a value.
    """
    try:
        yield
    except StoreError:
        raise
    except (asyncpg.DataError, asyncpg.exceptions.ProgramLimitExceededError) as e:
        raise ContentRefused(f"the database refused the contents ({type(e).__name__})") from e
    except _UNAVAILABLE as e:
        raise DatabaseUnavailable(f"the database is unavailable ({type(e).__name__})") from e
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise StoreError(f"the database failed ({type(e).__name__})") from e
