"""The calibration benchmark: interval coverage, leave-one-source-out, of the conformal tables.

Collects every forecaster's scale-free residuals on the corpus once (training/calibrate.py's
`collect`: the runs cut at fractions of their length, as `forecaster calibrate` does), then,
for each source S, builds the tables without S (models/calibration.py's `build`, the code the
shipped tables come from) and scores S with them: how often the calibrated 50% and 90%
intervals hold the final value, beside the forecasters' own intervals. The ensemble is scored
on its test tasks only (its members trained on the train tasks, its stack on the calib ones);
`auto` is the forecaster the service picks for each cut run. Targets (issue 16): cov90 in
[0.85, 0.95] and cov50 in [0.45, 0.55] on every source at cutoff 0.2, within 0.1 of those at
0.1 and 0.5. Prints the tables and writes them to docs/benchmarks.md (section calibration).

    python benchmarks/calibration.py [--max-runs-per-task 10] [--residuals FILE]

--residuals reuses what `forecaster calibrate --residuals-out FILE` collected with the same
arguments (the benchmark then does no forecasting).

UNCERTAIN's default `uncertain_width`, leave-one-source-out: --replay-json reads the output of

    forecaster replay --json --max-runs-per-task 10 --policies none forecast:epsilon=0.05 \
        forecast:epsilon=0.05,uncertain_width=0 \
        forecast:epsilon=0.05,min_gain_rate=0.01,uncertain_width=W ...   (W = 0 0.25 0.5 1 2)

(--replay-before-json: the same with --models-dir set to the models without their
calibration/, i.e. before issue 16) and, for each source, chooses the width on the other
sources (the least mean regret, then the least compute) and scores it on the source. With the
default policy settings UNCERTAIN cannot change a stop (an interval that spans the incumbent
leaves P(beat it) >= 5%), so the width is chosen where it does: the cost-aware check.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import corpus_found, corpus_parser, markdown_table, write_section  # noqa: E402

from forecaster.models import calibration as cal  # noqa: E402
from forecaster.models.artifacts import ModelBank  # noqa: E402
from forecaster.models.base import AUTO_LAW  # noqa: E402
from forecaster.training import calibrate  # noqa: E402

CUTOFFS = (0.1, 0.2, 0.5)
SCORED_PARTS: Mapping[str, tuple[str, ...]] = {"ensemble": ("test",)}  # else every part
_I90, _I50 = (
    (cal.LEVELS.index(0.05), cal.LEVELS.index(0.95)),
    (
        cal.LEVELS.index(0.25),
        cal.LEVELS.index(0.75),
    ),
)


def scored_rows(rows: Sequence[Mapping[str, Any]], source: str) -> list[Mapping[str, Any]]:
    """The rows of source a table built without it is scored on, plus one "auto" row per cut
    run: the forecaster the service picks there (the rows' `served`; in residuals collected
    before it was recorded: the schedule law auto serves, else ensemble, else power_law)."""
    mine = [
        r
        for r in rows
        if r["source"] == source
        and r["cutoff"] in CUTOFFS
        and r["part"] in SCORED_PARTS.get(str(r["model"]), (r["part"],))
    ]
    by_cut: dict[tuple[str, float], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in mine:
        by_cut[(str(r["run_id"]), float(r["cutoff"]))][str(r["model"])] = r
    autos = []
    for models in by_cut.values():
        served = {r.get("served") for r in models.values()} - {None}
        if served:  # the forecaster auto serves, when it is scored here (the ensemble: test)
            name = str(next(iter(served)))
            if name in models:
                autos.append({**models[name], "model": "auto", "served": name})
            continue
        for name in (AUTO_LAW, "ensemble", "power_law"):
            if name in models:
                autos.append({**models[name], "model": "auto", "served": name})
                break
    return [*mine, *autos]


def coverage(table: cal.Table, rows: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """(cov50, cov90) of the table's intervals on the rows' residuals."""
    res = cal.as_residuals([{**r, "model": "x"} for r in rows])["x"]
    q = np.array(
        [
            table.quantiles(np.array([p]), int(n))[0]
            for p, n in zip(res.progress, res.n_points, strict=True)
        ]
    )
    in50 = (q[:, _I50[0]] <= res.r) & (res.r <= q[:, _I50[1]])
    in90 = (q[:, _I90[0]] <= res.r) & (res.r <= q[:, _I90[1]])
    return float(in50.mean()), float(in90.mean())


def loso(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (source, model, cutoff): the forecaster's own coverage, and the coverage of the
    tables built without the source (LOSO) and with every source (in-distribution)."""
    table_rows = calibrate.table_rows(rows)
    everything = cal.build(cal.as_residuals(table_rows))
    out: list[dict[str, Any]] = []
    for source in sorted({str(r["source"]) for r in rows}):
        without = cal.build(cal.as_residuals([r for r in table_rows if r["source"] != source]))
        groups: dict[tuple[str, float], list[Mapping[str, Any]]] = defaultdict(list)
        for r in scored_rows(rows, source):
            groups[(str(r["model"]), float(r["cutoff"]))].append(r)
        for (model, cutoff), mine in sorted(groups.items()):
            cells: dict[str, tuple[float, float]] = {}
            for label, tables in (("loso", without), ("in", everything)):
                per_model: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
                for r in mine:
                    per_model[str(r.get("served", model))].append(r)
                if model != "auto" and model not in tables.tables:
                    continue  # served with its own intervals: the own columns say it
                hits = [  # a forecaster without a table is served with its own intervals
                    (
                        coverage(tables.tables[m], rs)
                        if m in tables.tables
                        else (_mean(rs, "raw_in_50"), _mean(rs, "raw_in_90")),
                        len(rs),
                    )
                    for m, rs in per_model.items()
                ]
                n = sum(k for _, k in hits)
                cells[label] = (
                    sum(c[0] * k for c, k in hits) / n,
                    sum(c[1] * k for c, k in hits) / n,
                )
            if "loso" not in cells:
                continue
            out.append(
                {
                    "source": source,
                    "model": model,
                    "cutoff": cutoff,
                    "n": len(mine),
                    "own50": float(np.mean([r["raw_in_50"] for r in mine])),
                    "own90": float(np.mean([r["raw_in_90"] for r in mine])),
                    "in50": cells.get("in", (np.nan, np.nan))[0],
                    "in90": cells.get("in", (np.nan, np.nan))[1],
                    "loso50": cells["loso"][0],
                    "loso90": cells["loso"][1],
                }
            )
    return out


def meets(row: Mapping[str, Any], which: str = "loso") -> bool:
    """The issue's target for the row's cutoff (0.2: the bounds; 0.1 and 0.5: within 0.1), for
    the LOSO-calibrated intervals (or the forecaster's own: which="own")."""
    slack = 0.0 if row["cutoff"] == 0.2 else 0.1
    return bool(
        0.85 - slack <= row[f"{which}90"] <= 0.95 + slack
        and 0.45 - slack <= row[f"{which}50"] <= 0.55 + slack
    )


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")


def width_choice(replay_rows: Sequence[Mapping[str, Any]]) -> list[list[object]]:
    """Per held-out source: the uncertain_width chosen on the other sources (the least mean
    regret, within 1e-5, then the least compute), and its figures on the source beside off."""
    cost = [
        r
        for r in replay_rows
        if r["policy"] == "forecast" and r["params"].get("min_gain_rate") == 0.01
        and r["source"] != "all"
    ]  # fmt: skip
    widths = sorted({float(r["params"]["uncertain_width"]) for r in cost})
    sources = sorted({str(r["source"]) for r in cost})

    def at(width: float, keep: Sequence[str]) -> list[Mapping[str, Any]]:
        return [r for r in cost if r["params"]["uncertain_width"] == width and r["source"] in keep]

    out: list[list[object]] = []
    for source in sources:
        others = [s for s in sources if s != source]
        regret = {w: _mean(at(w, others), "mean_rel_regret") for w in widths}
        best = min(regret.values())
        chosen = min(
            (w for w in widths if regret[w] <= best + 1e-5),
            key=lambda w: _mean(at(w, others), "compute_fraction"),
        )
        held, off = at(chosen, [source]), at(0.0, [source])
        out.append(
            [source, f"{chosen:g}"]
            + [f"{_mean(rs, k):.4f}" for rs in (held, off)
               for k in ("compute_fraction", "mean_rel_regret", "top1_kept")]
        )  # fmt: skip
    return out


def replay_lines(
    after: Sequence[Mapping[str, Any]], before: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The replay before and after issue 16 (over the corpus), and the LOSO width choice."""
    rows = []
    for label, results in (("own intervals (before)", before), ("calibrated", after)):
        for r in results:
            if r["source"] == "all":
                params = ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
                rows.append([label, r["policy"], params, f"{r['compute_fraction']:.4f}",
                             f"{r['mean_rel_regret']:.5f}", f"{r['top1_kept']:.3f}"])  # fmt: skip
    choice = width_choice(after)
    widths = [str(c[1]) for c in choice]
    common = max(set(widths), key=widths.count) if widths else "-"
    return [
        "### UNCERTAIN: the replay, and the default `uncertain_width`",
        "",
        "`forecaster replay --max-runs-per-task 10` with the settings in the script's doc "
        "(each source weighs the same), with the forecasters' own intervals (the models "
        "without `calibration/`: before issue 16, where `uncertain_width=0`) and calibrated. "
        "With the default settings `uncertain_width` changes no decision (the rows with and "
        "without it are the same): UNCERTAIN only names a continue.",
        "",
        markdown_table(["", "policy", "params", "compute", "rel_regret", "top1_kept"], rows),
        "",
        "uncertain_width chosen without each source (on the other six: the least mean regret, "
        "then the least compute) under the cost-aware check (`min_gain_rate=0.01`), and how it "
        "does on the source left out, beside UNCERTAIN off:",
        "",
        markdown_table(
            [
                "held-out source",
                "chosen width",
                "compute",
                "regret",
                "top1",
                "compute (off)",
                "regret (off)",
                "top1 (off)",
            ],
            choice,
        ),  # fmt: skip
        "",
        f"Chosen in {widths.count(common)} of {len(widths)} folds: {common}, the default "
        "(`policies/base.py` UNCERTAIN_WIDTH).",
    ]


def main() -> int:
    parser = corpus_parser(__doc__)
    parser.set_defaults(max_runs_per_task=10)
    parser.add_argument("--residuals", help="Parquet of `forecaster calibrate --residuals-out`")
    parser.add_argument("--models-dir", default="", help="the learned models ('' = shipped)")
    parser.add_argument("--replay-json", help="`forecaster replay --json` output (see the doc)")
    parser.add_argument("--replay-before-json", help="the same, before issue 16")
    args = parser.parse_args()
    import polars as pl

    t0 = time.time()
    if args.residuals:
        rows = pl.read_parquet(args.residuals).to_dicts()
        how = "the residuals `forecaster calibrate --max-runs-per-task 10 --residuals-out` wrote"
    else:
        if not corpus_found(args.corpus):
            return 2
        rows = calibrate.collect(
            args.corpus,
            bank=ModelBank.load(args.models_dir),
            max_runs_per_task=args.max_runs_per_task,
            workers=args.workers,
        )
        how = "residuals collected by this run"
    results = loso(rows)
    elapsed = time.time() - t0
    headers = ["source", "model", "cutoff", "n", "own cov50", "own cov90", "in-dist cov50",
               "in-dist cov90", "LOSO cov50", "LOSO cov90", "target"]  # fmt: skip
    table = [
        [r["source"], r["model"], r["cutoff"], r["n"], f"{r['own50']:.2f}", f"{r['own90']:.2f}",
         f"{r['in50']:.2f}", f"{r['in90']:.2f}", f"{r['loso50']:.2f}", f"{r['loso90']:.2f}",
         "met" if meets(r) else "**not met**"]
        for r in results
    ]  # fmt: skip
    auto = [r for r in results if r["model"] == "auto"]
    met = sum(meets(r) for r in auto)
    lines = [
        f"`python benchmarks/calibration.py --max-runs-per-task {args.max_runs_per_task}` "
        f"({len(rows)} residuals, {how}; {elapsed:.0f} s).",
        "",
        "Coverage of the final value by the 50% and 90% intervals: the forecaster's own "
        "(`own`), and calibrated by tables built with every source (`in-dist`) and without the "
        "scored source (`LOSO`: the figure that counts). `auto` is what the service serves "
        "on each cut run. Target (issue 16): cov90 in [0.85, 0.95] and cov50 in [0.45, 0.55] "
        "at cutoff 0.2, within 0.1 of those at 0.1 and 0.5.",
        "",
        markdown_table(headers, table),
        "",
        f"`auto`, LOSO: target met in {met} of {len(auto)} (source, cutoff) cells (the "
        f"forecasters' own intervals: {sum(meets(r, 'own') for r in auto)} of {len(auto)}).",
    ]
    if args.replay_json:
        import json

        after = json.loads(Path(args.replay_json).read_text())["results"]
        before = (
            json.loads(Path(args.replay_before_json).read_text())["results"]
            if args.replay_before_json
            else []
        )
        lines += ["", *replay_lines(after, before)]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("calibration", "## Calibration, leave-one-source-out (issue 16)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
