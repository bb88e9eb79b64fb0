"""Engine behaviour that the API tests do not pin down: the refit schedule and the cache."""

from __future__ import annotations

import numpy as np

from forecaster.curves import Direction, Points
from forecaster.engine import Engine
from forecaster.judging import fit_length
from forecaster.store import RunSpec, StudySpec
from forecaster.store.sqlite import SqliteStore


def test_fit_length_is_a_monotone_prefix_within_ten_percent():
    lengths = [fit_length(n) for n in range(0, 5000)]
    assert lengths[:33] == list(range(33))
    assert all(b >= a for a, b in zip(lengths, lengths[1:], strict=False))
    assert all(n / 1.1 - 1 <= m <= n for n, m in enumerate(lengths))
    assert len(set(lengths[33:])) < 60  # few refits over thousands of points


def test_decisions_are_the_same_from_a_cold_engine(tmp_path, shipped_models):
    """What a restarted replica computes from the store equals what the live one answered."""
    store = SqliteStore(tmp_path / "e.db")
    live = Engine(store, models=shipped_models)
    live.create_study(StudySpec("s", "loss", Direction.MIN, max_step=1000, target=2.3))
    live.start_run("s", RunSpec("r"))
    s = np.arange(1, 301)
    v = 2.0 + 3.0 * (s / 10.0) ** -0.5
    for lo in range(0, 300, 10):
        answered = live.report("s", "r", Points.of(s[lo : lo + 10], v[lo : lo + 10])).decision
    cold = Engine(store, models=shipped_models)
    assert cold.decision("s", "r") == answered
    live_fc, _ = live.forecast("s", "r")
    cold_fc, _ = cold.forecast("s", "r")
    np.testing.assert_array_equal(live_fc.quantiles, cold_fc.quantiles)


def test_two_replicas_answer_alike_after_the_incumbent_moves(postgres_server, shipped_models):
    """Two replicas that decided on the same points at different moments (another run
    reported better values in between) answer GetDecision alike: the newer incumbent."""
    from forecaster.store.postgres import PostgresStore

    url = postgres_server.fresh_url()
    early = Engine(PostgresStore(url, pool_size=2), models=shipped_models)
    late = Engine(PostgresStore(url, pool_size=2), models=shipped_models)
    early.create_study(StudySpec("s", "loss", Direction.MIN, max_step=1000))
    for name in ("r", "other"):
        early.start_run("s", RunSpec(name))
    s = np.arange(1, 201)
    early.report("s", "other", Points.of(s, 2.5 + 3.0 * (s / 10.0) ** -0.5))
    early.report("s", "r", Points.of(s, 2.0 + 3.0 * (s / 10.0) ** -0.5))
    before = early.decision("s", "r")
    late.report("s", "other", Points.of(s + 200, np.full(200, 1.5)))  # a better incumbent
    answers = [early.decision("s", "r"), late.decision("s", "r")]
    assert answers[0] == answers[1]
    assert answers[0] != before  # decided again against the new incumbent, not replayed


def test_completed_runs_of_a_study_inform_the_running_ones(tmp_path, shipped_models):
    from forecaster.store import RunState
    from tests.models.test_annealing_law import run as law_run

    engine = Engine(SqliteStore(tmp_path / "e.db"), models=shipped_models)
    engine.create_study(StudySpec("llm", "loss", Direction.MIN, max_step=8000))
    for i, (kind, total) in enumerate([("wsd", 4000), ("cosine", 6000), ("wsd", 8000)]):
        curve, _ = law_run(kind, total, seed=i)
        engine.start_run("llm", RunSpec(f"done{i}", max_step=total, lr_schedule=curve.schedule))
        engine.report("llm", f"done{i}", Points.of(curve.steps, curve.values))
        engine.finish_run("llm", f"done{i}", RunState.FINISHED)
    curve, final = law_run("wsd", 5000, until=1500, seed=9)
    engine.start_run("llm", RunSpec("live", max_step=5000, lr_schedule=curve.schedule))
    engine.report("llm", "live", Points.of(curve.steps, curve.values))
    summary, _ = engine.forecast("llm", "live", at_steps=[5000])
    assert summary.model == "multi_power_law"  # auto, the lr known
    assert "shared with 3 completed runs" in " ".join(summary.notes)
    assert abs(summary.quantiles[0, 2] - final) / final < 0.01


def test_a_stable_phase_wsd_run_sees_its_drop_in_the_path_and_its_steps_to_target(
    tmp_path, shipped_models
):
    """Issue 15: the planned schedule (StartRun.lr_schedule) and the study's finished runs
    give the whole future curve; steps-to-target come from the same law."""
    from forecaster.curves import LrProfile
    from forecaster.models.base import AUTO_LAW  # the runs follow the law auto serves
    from forecaster.store import RunState
    from tests.models.test_annealing_law import STUDY, law_loss, schedule_of
    from tests.models.test_annealing_law import run as law_run

    plan = schedule_of("wsd", 16000)
    truth_at = law_loss(plan, np.array([13000, 14500, 16000]), 16000, AUTO_LAW)
    engine = Engine(SqliteStore(tmp_path / "e.db"), models=shipped_models)
    engine.create_study(StudySpec("llm", "loss", Direction.MIN, max_step=16000,
                                  target=float(truth_at[1])))  # fmt: skip
    for i, (kind, total) in enumerate(STUDY):
        curve, _ = law_run(kind, total, seed=i, law=AUTO_LAW)
        engine.start_run("llm", RunSpec(f"done{i}", max_step=total, lr_schedule=curve.schedule))
        engine.report("llm", f"done{i}", Points.of(curve.steps, curve.values))
        engine.finish_run("llm", f"done{i}", RunState.FINISHED)
    curve, final = law_run("wsd", 16000, until=4800, seed=9, law=AUTO_LAW)
    engine.start_run("llm", RunSpec("live", max_step=16000, lr_schedule=plan))
    engine.report("llm", "live", Points.of(curve.steps, curve.values))
    summary, path = engine.forecast("llm", "live", at_steps=[13000, 16000], path_points=40)
    assert summary.model == "multi_power_law"  # auto, the lr known
    np.testing.assert_allclose(summary.quantiles[:, 2], truth_at[[0, 2]], rtol=3e-3)
    assert path is not None
    # The path follows the schedule: flat-ish in the stable phase, the drop in the cool-down.
    median = path.quantiles[:, 2]
    steps = np.array(path.steps)
    cool = steps >= 12800
    assert median[cool][0] - median[-1] > 0.02
    # The target is reached in the cool-down, where the law says.
    assert summary.steps_to_target
    reach = summary.steps_to_target[len(summary.steps_to_target) // 2]
    assert abs(reach - 14500) < 400
    assert LrProfile.from_schedule(plan, 16000).lr_at([reach])[0] < plan.peak_lr


def test_a_runs_config_travels_with_its_curve_to_the_forecasters(tmp_path, shipped_models):
    from forecaster.store.base import curve_of

    store = SqliteStore(tmp_path / "e.db")
    engine = Engine(store, models=shipped_models)
    engine.create_study(StudySpec("s", "loss", Direction.MIN, max_step=1000))
    config = {"learning_rate": 3e-4, "batch_size": 64, "optimizer": "adamw"}
    engine.start_run("s", RunSpec("r", config=config))
    s = np.arange(1, 101)
    engine.report("s", "r", Points.of(s, 2.0 + 3.0 * (s / 10.0) ** -0.5))
    curve = curve_of(store.get_study("s"), store.get_run("s", "r"), store.get_points("s", "r"))
    assert curve.config == config


def test_default_is_stored_as_forecast_and_studies_stored_as_default_stay_idempotent(
    tmp_path, shipped_models
):
    """Issue 14: "default" is an alias resolved before a spec is stored; a study an older
    service stored with "default" (or "") is still the same definition on a re-create."""
    import pytest

    from forecaster.errors import AlreadyExistsError

    store = SqliteStore(tmp_path / "e.db")
    engine = Engine(store, models=shipped_models)

    def spec(name: str, policy: str, max_step: int = 100, **params: int) -> StudySpec:
        return StudySpec(name, "loss", Direction.MIN, max_step, None, policy, params)

    study, created = engine.create_study(spec("new", "default"))
    assert created and study.spec.policy == "forecast"
    for again in ("default", "", "forecast"):
        assert engine.create_study(spec("new", again)) == (study, False)
    for stored in ("default", ""):
        name = f"legacy-{stored or 'empty'}"
        old, _ = store.create_study(spec(name, stored))  # as an older service stored it
        for again in ("default", "", "forecast"):
            assert engine.create_study(spec(name, again)) == (old, False)
        with pytest.raises(AlreadyExistsError, match="max_step") as info:
            engine.create_study(spec(name, "default", max_step=200))
        assert "policy" not in str(info.value)  # only what really differs
        with pytest.raises(AlreadyExistsError, match="policy"):
            engine.create_study(spec(name, "median", min_peers=2))


def test_a_grace_setting_beyond_the_budget_is_refused_for_every_policy_that_has_one(
    tmp_path, shipped_models
):
    import pytest

    from forecaster.errors import InvalidArgumentError

    engine = Engine(SqliteStore(tmp_path / "e.db"), models=shipped_models)
    for policy, setting in [("forecast", "grace_steps"), ("asha", "min_steps"),
                            ("median", "grace_steps"), ("target", "grace_steps")]:  # fmt: skip
        spec = StudySpec(policy, "loss", Direction.MIN, 100, None, policy, {setting: 500})
        with pytest.raises(InvalidArgumentError, match=f"{setting}=500 is beyond"):
            engine.create_study(spec)
        engine.create_study(
            StudySpec(policy, "loss", Direction.MIN, 1000, None, policy, {setting: 500})
        )


class CountingStore(SqliteStore):
    """A real SQLite store that counts whose points it reads."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.reads: dict[str, int] = {}

    def get_points(self, study: str, run: str) -> Points:
        self.reads[run] = self.reads.get(run, 0) + 1
        return super().get_points(study, run)


def test_a_peers_points_are_read_once_not_on_every_report(tmp_path):
    """The median rule reads the other runs' curves on every decision: from the store once."""
    from forecaster.store import RunState

    store = CountingStore(tmp_path / "e.db")
    engine = Engine(store, models=None)
    engine.create_study(StudySpec("s", "loss", Direction.MIN, max_step=200, policy="median"))
    steps = np.arange(1, 101)
    for i in range(5):
        engine.start_run("s", RunSpec(f"done-{i}"))
        engine.report("s", f"done-{i}", Points.of(steps, 2.0 + i * 0.1 + 1 / steps))
        engine.finish_run("s", f"done-{i}", RunState.FINISHED)
    engine.start_run("s", RunSpec("live"))
    engine = Engine(store, models=None)  # restarted: nothing cached
    store.reads.clear()
    for lo in range(1, 100, 10):
        engine.report(
            "s", "live", Points.of(steps[lo - 1 : lo + 9], 2.5 + 1 / steps[lo - 1 : lo + 9])
        )
    assert sum(store.reads.get(f"done-{i}", 0) for i in range(5)) > 0  # the rule read them
    assert all(store.reads.get(f"done-{i}", 0) <= 1 for i in range(5)), store.reads
