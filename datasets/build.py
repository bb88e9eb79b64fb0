"""Rebuilds what datasets/ ships from the full corpus: the sample corpus (datasets/sample), the
schedule-law CSVs (datasets/law), a long-form CSV (datasets/long), the manifest of the full
corpus (datasets/manifest.json) and the mirror of its schema (datasets/SCHEMA.md).

    python datasets/build.py --corpus ../shared/datasets

Deterministic: the same corpus gives the same files, byte for byte. The sample keeps a few
tasks of three sources, a seeded choice of runs in each, every point of those runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent

# source -> (tasks, runs per task): small enough to ship (< 2 MB), enough tasks per source that
# `forecaster train` can split them into train/calib/test (it needs three or more).
SAMPLE = {
    "lcbench": (["APSFailure", "Australian", "car", "albert", "bank-marketing"], 24),
    "taskset": (5, 24),
    "lr_scheduling_llm": (
        ["lm_slimpajama_33M", "lm_slimpajama_53M", "lm_slimpajama_60M", "lm_slimpajama_93M",
         "lm_openwebtext2_60M", "lm_openwebtext2_93M"],
        8,
    ),
}  # fmt: skip
SEED = 0

# The schedule-law example of the README: three runs of one task of lr_scheduling_llm
# (lm_slimpajama_93M: WSD at peak lr 1e-3, cosine at 2e-3), as `forecaster law` reads them.
LAW_TASK = "lm_slimpajama_93M"
LAW_FILES = {
    "wsd_10k.csv": ("wsd", 10000, True),
    "cosine_17k5.csv": ("cos", 17500, True),
    "wsd_17k5_decay20.csv": ("wsd", 17500, False),  # the plan: step, lr (and the loss it got)
}


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(corpus: Path) -> dict[str, object]:
    """Row counts, tasks and content hashes of each source of the corpus."""
    out: dict[str, object] = {}
    for src in sorted(p for p in corpus.iterdir() if (p / "runs.parquet").exists()):
        runs = pl.read_parquet(src / "runs.parquet", columns=["task"])
        points = pl.scan_parquet(src / "points.parquet").select(pl.len()).collect().item()
        out[src.name] = {
            "runs": runs.height,
            "points": int(points),
            "tasks": runs["task"].n_unique(),
            "sha256": {
                "runs.parquet": content_hash(src / "runs.parquet"),
                "points.parquet": content_hash(src / "points.parquet"),
            },
        }
    return out


def build_sample(corpus: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    for source, (tasks, per_task) in SAMPLE.items():
        runs = pl.read_parquet(corpus / source / "runs.parquet")
        if isinstance(tasks, int):
            tasks = sorted(runs["task"].unique().to_list())[:tasks]
        chosen = (
            runs.filter(pl.col("task").is_in(tasks))
            .sort("run_id")
            .filter(pl.int_range(pl.len()).shuffle(seed=SEED).over("task") < per_task)
        )
        ids = chosen["run_id"].implode()
        points = (
            pl.scan_parquet(corpus / source / "points.parquet")
            .filter(pl.col("run_id").is_in(ids))
            .sort("run_id", "step")
            .collect()
        )
        folder = out / source
        folder.mkdir(parents=True)
        chosen.write_parquet(folder / "runs.parquet", compression="zstd", statistics=True)
        points.write_parquet(folder / "points.parquet", compression="zstd", statistics=True)


def build_law(corpus: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    source = corpus / "lr_scheduling_llm"
    runs = pl.read_parquet(source / "runs.parquet").filter(pl.col("task") == LAW_TASK)
    for name, (scheduler, horizon, with_loss) in LAW_FILES.items():
        picked = [
            r
            for r in runs.sort("run_id").iter_rows(named=True)
            if json.loads(r["config"]).get("scheduler") == scheduler
            and r["max_step"] == horizon
            and json.loads(r["config"]).get("wsd_fract_decay") in (None, 0, 0.2)
            and (scheduler == "cos" or json.loads(r["config"]).get("wsd_fract_decay") == 0.2)
        ]
        run_id = picked[0]["run_id"]
        points = (
            pl.scan_parquet(source / "points.parquet")
            .filter(pl.col("run_id") == run_id)
            .sort("step")
            .select("step", "lr", pl.col("value").alias("loss"))
            .collect()
        )
        if not with_loss:  # a planned schedule: where the lr is known
            points = points.filter(pl.col("lr").is_not_null())
        points.write_csv(out / name, float_precision=6)
        print(f"{name}: {run_id}")


LONG_TASKS = ("lm_slimpajama_33M", "lm_slimpajama_53M")


def build_long(sample: Path, out: Path) -> None:
    """Two tasks of the sample as one long-form CSV (run_id, step, value, lr, task, max_step):
    the input of the README's `forecaster import long` and `forecaster batch --points`."""
    out.mkdir(parents=True, exist_ok=True)
    source = sample / "lr_scheduling_llm"
    runs = pl.read_parquet(source / "runs.parquet").filter(pl.col("task").is_in(LONG_TASKS))
    points = (
        pl.read_parquet(source / "points.parquet")
        .join(runs.select("run_id", "task", "max_step"), on="run_id")
        .with_columns(pl.col("run_id").str.replace("lr_scheduling_llm/", "", literal=True))
        .select("run_id", "step", "value", "lr", "task", "max_step")
        .sort("run_id", "step")
    )
    points.write_csv(out / "sweep.csv", float_precision=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(HERE.parent.parent / "shared" / "datasets"))
    args = parser.parse_args()
    corpus = Path(args.corpus)
    shutil.copyfile(corpus / "SCHEMA.md", HERE / "SCHEMA.md")
    build_sample(corpus, HERE / "sample")
    build_law(corpus, HERE / "law")
    build_long(HERE / "sample", HERE / "long")
    entries = {
        "corpus": manifest(corpus),
        "sample": manifest(HERE / "sample"),
        "law": {p.name: {"sha256": content_hash(p)} for p in sorted((HERE / "law").glob("*.csv"))},
        "long": {
            p.name: {"sha256": content_hash(p)} for p in sorted((HERE / "long").glob("*.csv"))
        },
    }
    (HERE / "manifest.json").write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
