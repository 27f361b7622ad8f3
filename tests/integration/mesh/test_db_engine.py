"""The shared engine (mesh.db.make_engine) keeps bound parameters out of its errors' text."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mesh.db import make_engine

BODY = "body-of-a-call-with-a-secret-7f3a9c"


async def test_an_integrity_error_does_not_carry_the_parameters(fresh_database: str) -> None:
    engine = make_engine(fresh_database, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE leak_check (id int PRIMARY KEY, body text)"))
        insert = sa.text("INSERT INTO leak_check (id, body) VALUES (1, :body)")
        async with engine.begin() as conn:
            await conn.execute(insert, {"body": BODY})
        with pytest.raises(IntegrityError) as raised:
            async with engine.begin() as conn:
                await conn.execute(insert, {"body": BODY})
        assert "leak_check_pkey" in str(raised.value)  # the error itself is still explained
        assert BODY not in str(raised.value)
    finally:
        await engine.dispose()
