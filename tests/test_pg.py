"""How a PostgreSQL store's callers see the driver's failures: one error of the store's own,
on one line, whatever the driver raised."""

from __future__ import annotations

import asyncpg
import pytest

from router.parked.store import ParkedStoreError
from router.pg import translated


@pytest.mark.parametrize(
    "raised",
    [
        asyncpg.InternalClientError(
            "cannot switch to state 12;\n another operation (2) is in progress"
        ),
        asyncpg.InterfaceError("connection is closed"),
        ConnectionResetError("reset by peer"),
    ],
)
async def test_every_driver_failure_becomes_the_stores_one_line_error(
    raised: Exception,
) -> None:
    """A connection whose server died mid-operation can raise the driver's internal error
    next; a keeper or a janitor retries a store error, so that one must become one too."""
    with pytest.raises(ParkedStoreError) as caught:
        async with translated(ParkedStoreError, "reading stats", "attentive_parked"):
            raise raised
    assert caught.value.__cause__ is raised
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("reading stats (attentive_parked): ")


async def test_an_error_of_a_kept_type_passes_as_it_is() -> None:
    kept = asyncpg.UniqueViolationError("duplicate key")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with translated(
            ParkedStoreError, "adding", "attentive_parked", keep=(asyncpg.UniqueViolationError,)
        ):
            raise kept
