"""The seeded sampling the evaluations share: one hash of the whole key, so tasks whose names
share a prefix or a length still get their own runs and their own order."""

from __future__ import annotations

from pathlib import Path

from forecaster.corpus.splits import split_tasks
from forecaster.evaluation.pool import sample_tasks
from forecaster.hashing import digest, seed_of
from tests.evaluation.test_accuracy import write_source

# Pairs that the old hash (first 8 bytes xor length) mapped to one seed.
COLLIDED = ["lcbench/task_1", "lcbench/task_2", "lcbench/task_9", "algoperf/wmt", "algoperf/ogb"]


def test_every_task_name_gets_its_own_seed():
    seeds = [seed_of(name) for name in COLLIDED]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**64 for s in seeds)
    assert seed_of("lcbench/task_1") == seed_of("lcbench/task_1")  # stable, not salted


def test_tasks_with_alike_names_sample_their_runs_in_different_orders(tmp_path: Path):
    # Nine tasks of 12 runs with the same run names: only the task's seed can tell them apart.
    curves = {
        f"task_{t}_r{i:02d}": (f"task_{t}", [(1, 1.0 + i, None), (2, 0.5 + i, None)])
        for t in range(1, 10)
        for i in range(12)
    }
    write_source(tmp_path, "lcbench", "min", curves)
    orders = {
        task: [run_id.rsplit("_r", 1)[1] for run_id in order]
        for _, task, order, _ in sample_tasks(tmp_path, None, 5, seed=0)
    }
    assert len(orders) == 9
    assert len({tuple(o) for o in orders.values()}) == 9


def test_the_task_split_is_the_sha256_order_it_always_was():
    # The artifacts name the tasks they trained on; the split must not move under them.
    tasks = [f"t{i}" for i in range(10)]
    ordered = sorted(tasks, key=lambda t: digest(f"0/src/{t}"))
    split = split_tasks("src", tasks, seed=0)
    assert [t for t in ordered if split[t] == "test"] == ordered[:2]
    assert [t for t in ordered if split[t] == "calib"] == ordered[2:4]
