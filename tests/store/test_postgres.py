"""What is PostgreSQL's own in PostgresStore, on the session's private server: migrations (once,
however many open together), the URL kept out of messages, an unreachable server. What every
Store promises is checked in test_contract.py."""

from __future__ import annotations

import threading

import psycopg
import pytest

from forecaster.curves import Direction
from forecaster.errors import StoreUnavailableError
from forecaster.store import StudySpec, open_store
from forecaster.store.postgres import PostgresStore
from forecaster.store.schema import LATEST_VERSION
from tests.postgres import PostgresServer


def test_replicas_opening_together_migrate_once(postgres_server: PostgresServer):
    url = postgres_server.fresh_url()
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(PostgresStore(url, pool_size=2))
        except BaseException as e:  # pragma: no cover - shown by the assert
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(stores) == 4
    with psycopg.connect(url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert sorted(versions) == list(range(1, LATEST_VERSION + 1))
    assert all(s.schema_version() == LATEST_VERSION for s in stores)
    for s in stores:
        s.close()


def test_a_newer_database_is_refused(postgres_server: PostgresServer):
    url = postgres_server.fresh_url()
    open_store(url).close()
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    with pytest.raises(StoreUnavailableError, match="newer"):
        open_store(url)


def test_the_password_stays_out_of_messages(postgres_server: PostgresServer):
    url = postgres_server.fresh_url().replace("postgres@", "postgres:hunter2@")
    store = open_store(url)
    store.create_study(StudySpec("s", "loss", Direction.MIN))
    with pytest.raises(Exception) as refused:
        store.get_run("s", "nope")
    store.close()
    with pytest.raises(StoreUnavailableError) as closed:
        store.list_studies()
    for message in (str(refused.value), str(closed.value), store.path):
        assert "hunter2" not in message
    assert store.path == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"


def test_an_unreachable_server_is_a_clear_error():
    with pytest.raises(StoreUnavailableError, match="cannot connect to the PostgreSQL"):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1.0)
