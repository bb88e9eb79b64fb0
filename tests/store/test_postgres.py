"""What is PostgreSQL's own in PostgresStore, on the session's private server: migrations (once,
however many open together), the URL kept out of messages, an unreachable server. What every
Store promises is checked in test_contract.py."""

from __future__ import annotations

import threading
from dataclasses import replace

import psycopg
import pytest

from forecaster.curves import Direction, LrSchedule, Points, ScheduleKind
from forecaster.errors import StoreUnavailableError
from forecaster.store import RunSpec, RunState, StoredDecision, StudySpec, open_store
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


def _two_replicas(server: PostgresServer) -> tuple[PostgresStore, PostgresStore]:
    url = server.fresh_url()
    one = PostgresStore(url, pool_size=2)
    two = PostgresStore(url, pool_size=2)
    one.create_study(StudySpec("s", "loss", Direction.MIN, max_step=100))
    return one, two


def test_a_run_read_again_shows_what_another_replica_wrote(postgres_server: PostgresServer):
    one, two = _two_replicas(postgres_server)
    try:
        config = {f"k{i}": i for i in range(1000)}
        one.start_run("s", RunSpec("r", config))
        assert one.get_run("s", "r").spec.config == config  # decoded, kept by its version
        assert one.get_run("s", "r").n_points == 0  # the same version: from what was kept
        schedule = LrSchedule(ScheduleKind.COSINE, peak_lr=1e-3, warmup_steps=0, total_steps=100)
        two.append_points("s", "r", Points.of([1, 2], [3.0, 2.5]), schedule)
        seen = one.get_run("s", "r")
        assert seen.n_points == 2 and seen.last_value == 2.5
        assert seen.spec.lr_schedule == schedule and seen.spec.config == config
        two.request_stop("s", "r", "enough")
        assert one.get_run("s", "r").stop_request is not None
        two.finish_run("s", "r", RunState.STOPPED)
        assert one.get_run("s", "r").state is RunState.STOPPED
    finally:
        one.close()
        two.close()


def test_what_an_append_read_is_handed_on_once(postgres_server: PostgresServer):
    """A report's append reads the run's decision and the study's best standings in its own
    statement and hands them to the engine's next reads on the same thread, once: a read
    after that asks the database, and sees another replica's writes."""
    one, two = _two_replicas(postgres_server)
    try:
        for run in ("a", "b"):
            one.start_run("s", RunSpec(run))
        decision = StoredDecision(2, 2, 0, 0, "continue", "promising", "", {}, 0, "forecast", 2.0)
        two.save_decision("s", "a", decision)
        one.append_points("s", "a", Points.of([1, 2], [3.0, 2.5]))
        assert one.get_points("s", "a").values.tolist() == [3.0, 2.5]
        assert one.get_decision("s", "a") == decision
        assert one.best_standings("s", 2) == [("a", 2.0)]
        better = replace(decision, forecast_final=1.5)
        two.save_decision("s", "b", better)
        two.save_decision("s", "a", replace(decision, votes=1, forecast_final=1.8))
        assert one.best_standings("s", 2) == [("b", 1.5), ("a", 1.8)]
        assert one.get_decision("s", "a") == replace(decision, votes=1, forecast_final=1.8)
        two.append_points("s", "a", Points.of([3], [2.4]))
        assert len(one.get_points("s", "a")) == 3
    finally:
        one.close()
        two.close()
