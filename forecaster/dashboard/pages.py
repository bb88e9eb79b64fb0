"""The dashboard's pages as HTML, from the engine's values: studies, a study, a run, login.

Pure functions (values in, text out), so a page is tested by what it shows; the HTTP side
(server/http.py) reads the values through the engine and sends the text. The charts are
inline SVG drawn by the one drawing module (reporting/svg.py); the only script is the
refresh, which re-reads the page and swaps its content in place.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlencode

import numpy as np

from forecaster.curves import Direction, Points, thin_indices
from forecaster.engine import RunSummary
from forecaster.models.prediction import ForecastSummary
from forecaster.policies import Action, Reason
from forecaster.reporting import svg
from forecaster.store import DecisionChange, RunState, Study

# The most points of one curve drawn: a 100k-point run is thinned to this many.
MAX_DRAWN_POINTS = 600


@dataclass(frozen=True)
class StudyRow:
    """One line of the studies page."""

    study: Study
    counts: Mapping[RunState, int]
    saved_steps: int


@dataclass(frozen=True)
class RunPlot:
    """A run as a chart draws it: its summary, its stored points, its forecast path."""

    summary: RunSummary
    points: Points
    path: ForecastSummary | None  # quantiles from the last observed step to the budget

    @property
    def name(self) -> str:
        return self.summary.run.name


def study_url(name: str, log_steps: bool = False) -> str:
    query = {"name": name, **({"log": "1"} if log_steps else {})}
    return f"/study?{urlencode(query)}"


def run_url(study: str, run: str, log_steps: bool = False) -> str:
    query = {"study": study, "run": run, **({"log": "1"} if log_steps else {})}
    return f"/run?{urlencode(query)}"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:8px 20px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none}header .crumbs a{opacity:.85}
main{padding:12px 20px}h1{font-size:20px;margin:8px 0}h2{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px}
.stop{color:#b00020;font-weight:600}.muted{color:#777}.note{color:#555;font-size:13px}
.toolbar{margin:6px 0;display:flex;gap:14px;align-items:center}
pre{background:#fff;border:1px solid #ddd;padding:8px;max-width:900px;overflow:auto}
form.stop-form{margin:10px 0}button.stop-button{background:#b00020;color:#fff;border:0;
padding:6px 14px;border-radius:4px;font-weight:600;cursor:pointer}
"""

# Re-reads the page every `data-refresh` seconds and swaps #content in place (no reload, no
# lost scroll); pauses while the tab is hidden. #refreshed counts the swaps.
_REFRESH_JS = """
(function(){
  var main=document.getElementById('content');
  var every=parseFloat(document.body.getAttribute('data-refresh')||'0');
  if(!main||!(every>0))return;
  var count=0;
  function tick(){
    if(document.hidden){return;}
    fetch(location.href,{credentials:'same-origin',cache:'no-store'})
      .then(function(r){return r.ok?r.text():null;})
      .then(function(text){
        if(!text)return;
        var doc=new DOMParser().parseFromString(text,'text/html');
        var fresh=doc.getElementById('content');
        if(!fresh)return;
        document.getElementById('content').replaceWith(fresh);
        count+=1;
        var n=document.getElementById('refreshed');
        if(n){n.textContent=String(count);}
      }).catch(function(){});
  }
  setInterval(tick,every*1000);
})();
"""


def layout(
    title: str, body: str, *, refresh_s: float, crumbs: Sequence[tuple[str, str]] = ()
) -> str:
    """A whole page: header with breadcrumbs, the content, the refresh script."""
    trail = "".join(
        f' / <a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in crumbs
    )
    refresh = (
        f'refreshes every {refresh_s:g} s (<span id="refreshed">0</span> so far)'
        if refresh_s > 0
        else "refresh off"
    )
    return (
        "<!DOCTYPE html>"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{_CSS}</style></head>"
        f'<body data-refresh="{refresh_s:g}"><header><a href="/"><b>forecaster</b></a>'
        f'<span class="crumbs"><a href="/">studies</a>{trail}</span>'
        f'<span class="muted" style="margin-left:auto;color:#cfd8e3">{refresh}</span></header>'
        f'<main><div id="content">{body}</div></main>'
        f"<script>{_REFRESH_JS}</script></body></html>"
    )


def _num(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '<span class="muted">-</span>'
    return f"{v:.{digits}g}"


def _when(t: float | None) -> str:
    if not t:
        return '<span class="muted">-</span>'
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _direction(d: Direction) -> str:
    return "minimize" if d is Direction.MIN else "maximize"


# -- studies ----------------------------------------------------------------------------------


def studies_page(rows: Sequence[StudyRow], *, refresh_s: float) -> str:
    if not rows:
        body = (
            "<h1>Studies</h1><p>No study yet. Report a run (the README's quickstart, or "
            "<code>forecaster demo --address HOST:PORT</code>) and it appears here.</p>"
        )
        return layout("forecaster: studies", body, refresh_s=refresh_s)
    lines = []
    for row in rows:
        spec = row.study.spec
        c = row.counts
        lines.append(
            "<tr>"
            f'<td><a href="{html.escape(study_url(spec.name))}">{html.escape(spec.name)}</a></td>'
            f"<td>{html.escape(spec.metric)}</td><td>{_direction(spec.direction)}</td>"
            f'<td class="num">{_num(spec.max_step)}</td><td class="num">{_num(spec.target)}</td>'
            f'<td class="num">{c.get(RunState.RUNNING, 0)}</td>'
            f'<td class="num">{c.get(RunState.STOPPED, 0)}</td>'
            f'<td class="num">{c.get(RunState.FINISHED, 0)}</td>'
            f'<td class="num">{c.get(RunState.FAILED, 0)}</td>'
            f'<td class="num">{row.saved_steps:,}</td>'
            f"<td>{html.escape(spec.policy or 'forecast')}</td>"
            "</tr>"
        )
    body = (
        '<h1>Studies</h1><table class="studies"><thead><tr><th>study</th><th>metric</th>'
        "<th>direction</th><th>budget</th><th>target</th><th>running</th><th>stopped</th>"
        "<th>finished</th><th>failed</th><th>steps saved</th><th>policy</th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>"
        '<p class="note">Steps saved: the budget the stopped runs did not spend (each '
        "run's budget minus the step it stopped at).</p>"
    )
    return layout("forecaster: studies", body, refresh_s=refresh_s)


# -- charts of runs ---------------------------------------------------------------------------


def _thinned(points: Points) -> tuple[list[int], list[float]]:
    idx = thin_indices(len(points), MAX_DRAWN_POINTS)
    return points.steps[idx].tolist(), points.values[idx].tolist()


def _fan(plot: RunPlot, color: str) -> svg.Fan | None:
    path = plot.path
    if path is None or not len(path.steps):
        return None
    levels = list(path.quantile_levels)
    want = (0.05, 0.25, 0.5, 0.75, 0.95)
    if not all(any(abs(q - w) < 1e-9 for q in levels) for w in want):
        return None
    q = np.asarray(path.quantiles)
    q05, q25, q50, q75, q95 = (q[:, _nearest(levels, w)].tolist() for w in want)
    return svg.Fan(list(path.steps), q05, q25, q50, q75, q95, color, run=plot.name)


def _nearest(levels: Sequence[float], level: float) -> int:
    return min(range(len(levels)), key=lambda i: abs(levels[i] - level))


def _stop_label(summary: RunSummary) -> str | None:
    """ "stopped: unpromising" for a run the service (or a person) stopped; None otherwise."""
    d = summary.decision
    state = summary.run.state
    if state is RunState.FINISHED or (d is not None and d.reason is Reason.BUDGET_EXHAUSTED):
        return None  # it ran its course
    if d is not None and d.action is Action.STOP:
        verb = "stopped" if state is not RunState.RUNNING else "stopping"
        return f"{verb}: {d.reason.value}"
    if state is RunState.STOPPED:
        return "stopped"
    return None


def _levels(study: Study, incumbent: float | None) -> list[svg.Rule]:
    """The incumbent and the target as horizontal lines (CSS classes "incumbent", "target")."""
    levels = []
    if incumbent is not None and math.isfinite(incumbent):
        levels.append(svg.Rule(incumbent, vertical=False, label=f"incumbent {incumbent:.4g}",
                               color="#444", dash="6 4", kind="incumbent"))  # fmt: skip
    if study.spec.target is not None:
        t = study.spec.target
        levels.append(svg.Rule(t, vertical=False, label=f"target {t:.4g}", color="#2e7d32",
                               dash="2 3", kind="target"))  # fmt: skip
    return levels


def _x_range(study: Study, plots: Sequence[RunPlot], log_steps: bool) -> tuple[float, float]:
    steps = [float(p.points.steps[0]) for p in plots if len(p.points)]
    ends = [float(p.points.steps[-1]) for p in plots if len(p.points)]
    ends += [float(p.path.steps[-1]) for p in plots if p.path is not None and p.path.steps]
    ends += [float(p.summary.run.spec.max_step or 0) for p in plots]
    if study.spec.max_step:
        ends.append(float(study.spec.max_step))
    lo = min(steps) if steps else 0.0
    hi = max(ends) if ends else 1.0
    lo = max(lo, 1.0) if log_steps else min(lo, 0.0)
    return lo, max(hi, lo + 1.0)


def study_chart(
    study: Study, plots: Sequence[RunPlot], incumbent: float | None, log_steps: bool
) -> svg.Chart:
    lines, fans, marks = [], [], []
    for i, plot in enumerate(plots):
        color = svg.color_of(i)
        steps, values = _thinned(plot.points)
        running = plot.summary.run.state is RunState.RUNNING
        opacity = 1.0 if running else 0.45  # a finished or stopped run, drawn behind
        line = svg.Line(steps, values, color, 1.6, label=plot.name, opacity=opacity, kind="curve",
                        run=plot.name)  # fmt: skip
        lines.append(line)
        fan = _fan(plot, color) if running else None
        if fan is not None:
            fans.append(fan)
        label = _stop_label(plot.summary)
        if label is not None and len(plot.points):
            finite = np.flatnonzero(np.isfinite(plot.points.values))
            at = int(finite[-1]) if len(finite) else len(plot.points) - 1
            value = float(plot.points.values[at])
            at_step = float(plot.points.steps[at])
            mark = svg.Mark(at_step, value, f"{plot.name}: {label}", color, kind="stop-mark")
            marks.append(mark)
    lines.sort(key=lambda line: line.opacity == 1.0)  # the finished and stopped runs behind
    return svg.Chart(
        x_label="step (log scale)" if log_steps else "step",
        y_label=study.spec.metric,
        lines=lines,
        marks=marks,
        rules=_levels(study, incumbent),
        x_scale="log" if log_steps else "linear",
        width=960,
        height=380,
        legend=False,
        fans=fans,
        x_range=_x_range(study, plots, log_steps),
    )


def _decision_cell(summary: RunSummary) -> str:
    d = summary.decision
    if d is None:
        return '<span class="muted">no decision yet</span>'
    cls = "stop" if d.action is Action.STOP else ""
    return f'<span class="{cls}">{d.action.value} / {d.reason.value}</span>'


def _forecast_cell(summary: RunSummary) -> str:
    f = summary.forecast
    if f is None or not len(f.steps):
        return '<span class="muted">-</span>'
    levels = list(f.quantile_levels)
    row = np.asarray(f.quantiles)[-1]

    def at(level: float) -> float:
        return float(row[_nearest(levels, level)])

    return f"{at(0.5):.4g} [{at(0.05):.4g}, {at(0.95):.4g}] @ {svg.format_number(f.steps[-1])}"


def _scale_toggle(href_linear: str, href_log: str, log_steps: bool) -> str:
    if log_steps:
        return f'<a href="{html.escape(href_linear)}">linear steps</a> | <b>log steps</b>'
    return f'<b>linear steps</b> | <a href="{html.escape(href_log)}">log steps</a>'


def study_page(
    study: Study,
    plots: Sequence[RunPlot],
    incumbent: float | None,
    *,
    log_steps: bool,
    refresh_s: float,
) -> str:
    spec = study.spec
    name = spec.name
    chart = svg.render(study_chart(study, plots, incumbent, log_steps))
    rows = []
    for i, plot in enumerate(plots):
        s = plot.summary
        r = s.run
        d = s.decision
        rows.append(
            f'<tr class="run" data-run="{html.escape(r.name)}">'
            f'<td><span class="swatch" style="background:{svg.color_of(i)}"></span>'
            f'<a href="{html.escape(run_url(name, r.name, log_steps))}">{html.escape(r.name)}</a>'
            f"</td><td>{r.state.value}</td>"
            f'<td class="num">{r.n_points}</td><td class="num">{r.last_step}</td>'
            f'<td class="num">{_num(r.last_value)}</td><td class="num">{_num(r.best_value)}</td>'
            f"<td>{_decision_cell(s)}</td><td>{_forecast_cell(s)}</td>"
            f'<td class="num">{_num(s.prob_beat_incumbent, 3)}</td>'
            f'<td class="explanation">{html.escape(d.explanation) if d else ""}</td></tr>'
        )
    budget = f"budget {spec.max_step:,} steps" if spec.max_step else "no budget"
    target = f", target {spec.target:g}" if spec.target is not None else ""
    body = (
        f"<h1>{html.escape(name)}</h1>"
        f'<p class="note">{html.escape(spec.metric)} ({_direction(spec.direction)}), '
        f"{budget}{target}, policy {html.escape(spec.policy or 'forecast')}, forecaster "
        f"{html.escape(spec.forecaster or 'auto')}. Running runs show their forecast to the "
        "budget: the dark band holds 50% of the outcomes (25-75%), the light one 90% (5-95%); "
        "a cross marks where a run was stopped, and why.</p>"
        f'<div class="toolbar">{_scale_toggle(study_url(name), study_url(name, True), log_steps)}'
        "</div>"
        f"{chart}"
        '<h2>Runs</h2><table class="runs"><thead><tr><th>run</th><th>state</th><th>points</th>'
        "<th>last step</th><th>last</th><th>best</th><th>decision</th>"
        "<th>forecast at budget: median [5%, 95%]</th><th>P(beat incumbent)</th>"
        "<th>why</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return layout(
        f"forecaster: {name}", body, refresh_s=refresh_s, crumbs=[(name, study_url(name))]
    )


# -- a run ------------------------------------------------------------------------------------


def _history_table(history: Sequence[DecisionChange]) -> str:
    if not history:
        return '<p class="muted">No decision yet: the run has reported no point.</p>'
    rows = []
    for h in history:
        probs = ", ".join(f"{k} = {v:.3g}" for k, v in sorted(h.probabilities.items()))
        cls = ' class="stop"' if h.action == "stop" else ""
        rows.append(
            f'<tr class="change"><td class="num">{h.at_step}</td><td>{_when(h.decided_at_s)}</td>'
            f"<td{cls}>{h.action}</td><td{cls}>{h.reason}</td><td>{html.escape(probs)}</td>"
            f'<td class="num">{_num(h.forecast_final)}</td>'
            f"<td>{html.escape(h.explanation)}</td><td>{html.escape(h.policy)}</td></tr>"
        )
    return (
        '<table class="history"><thead><tr><th>step</th><th>time (UTC)</th><th>action</th>'
        "<th>reason</th><th>probabilities</th><th>forecast final</th><th>explanation</th>"
        "<th>policy</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _schedule_strip(plot: RunPlot, chart: svg.Chart) -> str:
    """The planned learning-rate schedule (and the lr the run reported) under the curve."""
    schedule = plot.summary.run.spec.lr_schedule
    lr = plot.points.lr
    reported = np.isfinite(lr)
    observed = None
    if reported.any():
        idx = thin_indices(int(reported.sum()), MAX_DRAWN_POINTS)
        steps = plot.points.steps[reported][idx].tolist()
        observed = (steps, lr[reported][idx].tolist())
    if schedule is None and observed is None:
        return '<p class="muted">No planned learning-rate schedule and no reported lr.</p>'
    lo, hi = svg.x_range_of(chart)
    log = chart.x_scale == "log"
    lines = []
    label = "lr (reported)"
    if schedule is not None:
        grid = np.unique(
            (np.geomspace(max(lo, 1.0), hi, 300) if log else np.linspace(lo, hi, 300))
            .round()
            .astype(np.int64)
        )
        label = f"lr ({schedule.kind.value} plan)"
        lines.append(svg.Line(grid.tolist(), schedule.lr_at(grid).tolist(), "#555", 1.5,
                              label=label, kind="schedule"))  # fmt: skip
    if observed is not None:
        lines.append(svg.Line(*observed, "#555", 0, label="lr (reported)", markers=True,
                              kind="observed-lr"))  # fmt: skip
    return svg.render(svg.strip(chart, lines, y_label=label))


def run_page(
    study: Study,
    plot: RunPlot,
    history: Sequence[DecisionChange],
    incumbent: float | None,
    *,
    log_steps: bool,
    refresh_s: float,
    can_stop: bool,
    message: str = "",
) -> str:
    spec = study.spec
    s = plot.summary
    run = s.run
    chart_spec = replace(study_chart(study, [plot], incumbent, log_steps), legend=True)
    here = run_url(spec.name, run.name, log_steps)
    decision = s.decision
    headline = (
        f'<p class="decision"><b class="{"stop" if decision.action is Action.STOP else ""}">'
        f"{decision.action.value} / {decision.reason.value}</b>: "
        f"{html.escape(decision.explanation)}</p>"
        if decision is not None
        else '<p class="muted">No decision yet.</p>'
    )
    stop = ""
    if run.state is RunState.RUNNING and run.stop_request is None and can_stop:
        stop = (
            '<form class="stop-form" method="post" action="/stop">'
            f'<input type="hidden" name="study" value="{html.escape(spec.name)}">'
            f'<input type="hidden" name="run" value="{html.escape(run.name)}">'
            '<input type="text" name="note" placeholder="why (optional)" size="40"> '
            '<button class="stop-button" type="submit">Stop this run</button> '
            '<span class="note">the trainer stops at its next report (reason MANUAL)</span>'
            "</form>"
        )
    elif run.stop_request is not None:
        stop = (
            f'<p class="stop">Stop requested at {_when(run.stop_request.requested_at_s)} UTC'
            f"{': ' + html.escape(run.stop_request.note) if run.stop_request.note else ''}</p>"
        )
    info = (
        f'<table class="facts"><tr><th>state</th><td>{run.state.value}</td></tr>'
        f"<tr><th>points</th><td>{run.n_points} (last step {run.last_step})</td></tr>"
        f"<tr><th>last / best</th><td>{_num(run.last_value)} / {_num(run.best_value)}</td></tr>"
        f"<tr><th>forecast at budget</th><td>{_forecast_cell(s)}</td></tr>"
        f"<tr><th>P(beat incumbent)</th><td>{_num(s.prob_beat_incumbent, 3)}"
        f" (incumbent {_num(s.incumbent)})</td></tr>"
        f"<tr><th>budget</th><td>{_num(run.spec.max_step or spec.max_step)}</td></tr>"
        f"<tr><th>started</th><td>{_when(run.created_at_s)}</td></tr>"
        f"<tr><th>finished</th><td>{_when(run.finished_at_s)}</td></tr></table>"
    )
    notes = ""
    if plot.path is not None and plot.path.notes:
        notes = '<p class="note">forecast notes: ' + html.escape("; ".join(plot.path.notes))
        notes += f" (model {html.escape(plot.path.model)})</p>"
    elif plot.path is not None:
        notes = f'<p class="note">forecast by {html.escape(plot.path.model)}</p>'
    config = json.dumps(run.spec.config, indent=2, sort_keys=True) if run.spec.config else "{}"
    flash = f'<p class="flash stop">{html.escape(message)}</p>' if message else ""
    body = (
        f'<h1>{html.escape(run.name)} <span class="muted">in {html.escape(spec.name)}</span>'
        f"</h1>{flash}{headline}{stop}"
        f'<div class="toolbar">{_scale_toggle(run_url(spec.name, run.name), run_url(spec.name, run.name, True), log_steps)}'  # noqa: E501
        "</div>"
        f"{svg.render(chart_spec)}{_schedule_strip(plot, chart_spec)}{notes}"
        f"{info}<h2>Decision history</h2>{_history_table(history)}"
        f'<h2>Config</h2><pre class="config">{html.escape(config)}</pre>'
    )
    return layout(
        f"forecaster: {spec.name} / {run.name}",
        body,
        refresh_s=refresh_s,
        crumbs=[(spec.name, study_url(spec.name, log_steps)), (run.name, here)],
    )


# -- login ------------------------------------------------------------------------------------


def login_page(next_url: str, message: str = "") -> str:
    """The form that sets the token cookie (the service was started with a token)."""
    flash = f'<p class="stop">{html.escape(message)}</p>' if message else ""
    body = (
        f"<h1>Sign in</h1>{flash}<p>This service needs its token (the one it was started with, "
        "<code>FORECASTER_AUTH_TOKEN</code>). It is kept in a cookie for this site.</p>"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{html.escape(next_url)}">'
        '<input type="password" name="token" size="40" autofocus> '
        '<button type="submit">Sign in</button></form>'
    )
    return layout("forecaster: sign in", body, refresh_s=0)
