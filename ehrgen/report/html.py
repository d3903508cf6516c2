"""Self-contained offline HTML report: figures embedded as base64, one metrics table per section."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping

from ehrgen.report.descriptions import describe

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:4px 8px;margin:4px 0}
figure{display:inline-block;margin:0 1em 1em 0} img{max-width:560px}
"""


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:.3e}"


def _ci(entry: Mapping) -> str:
    if entry.get("ci_low") is None:
        return "-"
    return f"[{fmt(entry['ci_low'])}, {fmt(entry['ci_high'])}]"


def metrics_table(metrics: Mapping[str, Mapping], section: str) -> str:
    rows = []
    for key, entry in metrics.items():
        if not key.startswith(section + "/"):
            continue
        ref = metrics.get("reference/" + key)
        ideal, reading = describe(key)
        rows.append(
            "<tr>"
            f"<td>{html.escape(key[len(section) + 1 :])}</td>"
            f"<td class=num>{fmt(entry.get('value'))}</td>"
            f"<td class=num>{_ci(entry)}</td>"
            f"<td class=num>{fmt(ref.get('value')) if ref else ''}</td>"
            f"<td>{html.escape(ideal)}</td><td>{html.escape(reading)}</td>"
            "</tr>"
        )
    if not rows:
        return "<p>Not computed.</p>"
    head = (
        "<tr><th>metric</th><th>value</th><th>95% CI</th><th>real holdout (reference)</th>"
        "<th>ideal</th><th>reading</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def render(payload: Mapping, figures: Mapping[str, bytes]) -> str:
    """The whole report page from the metrics.json payload and PNG figures."""
    metrics = payload["metrics"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>ehrgen evaluation</title>",
        f"<style>{_STYLE}</style></head><body><h1>Synthetic cohort evaluation</h1>",
        "<h2>Inputs</h2><table><tr><th>role</th><th>path</th><th>splits</th><th>patients</th><th>visits</th></tr>",
    ]
    for role, src in payload["inputs"].items():
        parts.append(
            f"<tr><td>{role}</td><td>{html.escape(src['path'])}</td><td>{', '.join(src['splits'])}</td>"
            f"<td class=num>{src['n_patients']}</td><td class=num>{src['n_visits']}</td></tr>"
        )
    parts.append("</table>")
    boot = payload.get("bootstrap", {})
    parts.append(
        f"<p>95% CIs: percentile bootstrap over patients, {boot.get('n', '?')} replicates, "
        f"seed {boot.get('seed', '?')}. The reference column compares real with real held-out "
        "patients: the value an ideal generator could reach.</p>"
    )
    for w in payload.get("warnings", []):
        parts.append(f"<div class=warn>{html.escape(w)}</div>")
    parts.append("<h2>Figures</h2>")
    for name, png in figures.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    for section in ("fidelity", "conditioning", "validity", "privacy", "utility", "model"):
        parts.append(f"<h2>{section.capitalize()}</h2>")
        parts.append(metrics_table(metrics, section))
    parts.append("</body></html>")
    return "\n".join(parts)
