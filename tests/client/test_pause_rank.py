"""A paused decision and the study's ranking as the client API and the Reporter read them,
against the real service on a loopback port."""

from __future__ import annotations

import asyncio

from forecaster_client import AsyncStudyClient, RankedRun, Reporter, StudyClient


def curve(step: int, floor: float) -> float:
    return floor + 3.0 * (step / 10.0) ** -0.5


def reporter_for(address: str, run: str, **kw) -> Reporter:
    return Reporter(
        address,
        "freeze",
        run,
        max_step=1000,
        policy_params={"pause": True},
        flush_interval_s=0.02,
        **kw,
    )


def report(reporter: Reporter, floor: float, steps: range, every: int = 5) -> None:
    for i, s in enumerate(steps, 1):
        reporter.report(s, curve(s, floor))
        if i % every == 0:  # one batch, one decision: the votes of hysteresis add up
            assert reporter.flush(20)
    assert reporter.flush(20)


def test_a_paused_run_says_so_stays_running_and_is_ranked(live_server):
    address = live_server.address
    best = reporter_for(address, "best")
    report(best, 2.0, range(10, 1001, 10), every=50)
    best.close(state="finished")
    bad = reporter_for(address, "bad")
    report(bad, 4.0, range(10, 401, 10))
    assert bad.should_pause() and not bad.should_stop()
    assert bad.decision.pause and bad.decision.reason == "unpromising"
    bad.close()  # "auto": a paused run is left running, to be resumed
    good = reporter_for(address, "good")
    report(good, 1.9, range(10, 301, 10))
    assert not good.should_pause()

    with StudyClient(address) as client:
        ranked = client.rank("freeze")
        assert client.run("freeze", "bad").state == "running"
    assert [r.run for r in ranked] == ["good", "bad"]
    assert all(isinstance(r, RankedRun) for r in ranked)
    top, paused = ranked
    assert paused.paused and paused.decision is not None and paused.decision.pause
    assert top.gain_rate is not None and paused.gain_rate is not None
    assert top.gain_rate > paused.gain_rate and top.reference == "incumbent"
    assert [r.run for r in good.rank(limit=1)] == ["good"]  # the Reporter asks the same

    async def read() -> list[RankedRun]:
        async with AsyncStudyClient(address) as client:
            return await client.rank("freeze")

    assert asyncio.run(read()) == ranked
    good.close()


def test_the_reporter_ranks_nothing_when_the_service_is_away():
    reporter = Reporter("127.0.0.1:1", "s", "r", timeout_s=0.2, flush_interval_s=0.02)
    assert reporter.rank() == []
    reporter.close(timeout_s=0.5)
