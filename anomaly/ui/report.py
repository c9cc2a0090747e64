"""A printable inspection report of one batch: one self-contained HTML file.

Pictures are embedded (JPEG, base64) and the histogram is inline SVG, so the file can
be mailed, archived and printed (the browser's Print to PDF) without the dashboard or a
network. No plotting library: the dashboard's install stays small.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from anomaly.ui.views import FAIL_COLOR, PASS_COLOR, downscale

PANEL_MAX_SIDE = 420  # pixels: enough to see a defect on paper, small enough to mail


@dataclass
class ReportPart:
    """One failed part: its pictures (caption, uint8 RGB) and region rows."""

    name: str
    score: float | None
    panels: list[tuple[str, np.ndarray]]
    regions: list[dict[str, Any]] = field(default_factory=list)
    decision: str = ""
    note: str = ""


def jpeg_data_uri(rgb: np.ndarray, max_side: int = PANEL_MAX_SIDE) -> str:
    small = downscale(rgb, max_side)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError("could not encode JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def histogram_svg(
    scores: Sequence[float],
    verdicts: Sequence[str],
    threshold: float,
    width: int = 640,
    height: int = 180,
    bins: int = 30,
) -> str:
    """Score histogram, PASS and FAIL stacked, with the threshold as a dashed line."""
    pairs = [(float(s), v) for s, v in zip(scores, verdicts) if s == s and v in ("PASS", "FAIL")]
    if not pairs:
        return "<p>No scored images.</p>"
    values = [s for s, _ in pairs] + [threshold]
    lo, hi = min(values), max(values)
    pad = max(0.05, 0.05 * (hi - lo))
    lo, hi = max(0.0, lo - pad), hi + pad
    step = (hi - lo) / bins
    counts = {v: [0] * bins for v in ("PASS", "FAIL")}
    for s, v in pairs:
        counts[v][min(bins - 1, int((s - lo) / step))] += 1
    top = max(max(p + f for p, f in zip(counts["PASS"], counts["FAIL"])), 1)
    left, bottom, plot_h = 36, 24, height - 34
    plot_w = width - left - 10
    bw = plot_w / bins

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    bars = []
    for i in range(bins):
        y0: float = height - bottom
        for verdict, color in (("PASS", PASS_COLOR), ("FAIL", FAIL_COLOR)):
            n = counts[verdict][i]
            if n:
                h = n / top * plot_h
                bars.append(
                    f'<rect x="{left + i * bw:.1f}" y="{y0 - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" '
                    f'fill="{color}"><title>{verdict}: {n}</title></rect>'
                )
                y0 -= h
    ticks = "".join(
        f'<text x="{x(v):.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{v:.2f}</text>'
        for v in np.linspace(lo, hi, 6)
    )
    tx = x(threshold)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="Score histogram">'
        f'<text x="4" y="12" font-size="10">{top}</text><text x="4" y="{height - bottom}" font-size="10">0</text>'
        f'{"".join(bars)}<line x1="{left}" x2="{width - 10}" y1="{height - bottom}" y2="{height - bottom}" '
        f'stroke="#888"/>{ticks}<line x1="{tx:.1f}" x2="{tx:.1f}" y1="8" y2="{height - bottom}" stroke="#1c2430" '
        f'stroke-width="2" stroke-dasharray="5,3"/><text x="{tx + 4:.1f}" y="18" font-size="11">threshold '
        f"{threshold:.2f}</text></svg>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; color:#1c2430; margin:1.5cm; }
h1 { margin:0 0 .3rem 0; } h2 { margin:1.4rem 0 .4rem 0; border-bottom:2px solid #1c2430; }
table { border-collapse:collapse; font-size:.85rem; } td, th { padding:.15rem .6rem .15rem 0; text-align:left; }
.facts td:first-child { color:#5b6573; } .counts td { font-size:1.1rem; font-weight:700; padding-right:1.4rem; }
.part { page-break-inside:avoid; break-inside:avoid; border:1px solid #d5d9df; border-radius:6px;
        padding:.6rem; margin:.8rem 0; }
.part h3 { margin:0 0 .4rem 0; font-size:1rem; } .fail { color:#c62828; }
.panels { display:flex; gap:.5rem; } .panels figure { margin:0; flex:1; } .panels img { width:100%; }
figcaption { font-size:.75rem; color:#5b6573; } .regions th { border-bottom:1px solid #d5d9df; }
@media print { body { margin:0; } }
"""


def html_report(
    title: str,
    facts: Sequence[tuple[str, str]],
    scores: Sequence[float],
    verdicts: Sequence[str],
    threshold: float,
    failures: Sequence[ReportPart],
) -> bytes:
    """The report: facts (model, digest, threshold, date, operator), counts, the score
    histogram, then every failure with its pictures and regions."""
    esc = html.escape
    n = {v: sum(1 for x in verdicts if x == v) for v in ("PASS", "FAIL", "ERROR")}
    fact_rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in facts)
    parts = []
    for p in failures:
        panels = "".join(
            f'<figure><img src="{jpeg_data_uri(img)}" alt="{esc(cap)} {esc(p.name)}">'
            f"<figcaption>{esc(cap)}</figcaption></figure>"
            for cap, img in p.panels
        )
        regions = ""
        if p.regions:
            head = "".join(f"<th>{esc(str(k))}</th>" for k in p.regions[0])
            body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in r.values()) + "</tr>" for r in p.regions)
            regions = f'<table class="regions"><tr>{head}</tr>{body}</table>'
        score = (
            "" if p.score is None or (isinstance(p.score, float) and math.isnan(p.score)) else f" · score {p.score:.3f}"
        )
        decision = f" · inspector: <b>{esc(p.decision)}</b>" if p.decision else ""
        note = f"<p>Note: {esc(p.note)}</p>" if p.note else ""
        parts.append(
            f'<section class="part"><h3><span class="fail">FAIL</span> {esc(p.name)}{score}{decision}</h3>'
            f'<div class="panels">{panels}</div>{regions}{note}</section>'
        )
    body = (
        f'<h1>{esc(title)}</h1><table class="facts">{fact_rows}</table>'
        f'<h2>Summary</h2><table class="counts"><tr><td>{len(verdicts)} images</td>'
        f'<td style="color:{PASS_COLOR}">{n["PASS"]} PASS</td><td style="color:{FAIL_COLOR}">{n["FAIL"]} FAIL</td>'
        f"<td>{n['ERROR']} unreadable</td></tr></table>"
        f"<h2>Score distribution</h2>{histogram_svg(scores, verdicts, threshold)}"
        f"<h2>Failures ({len(failures)})</h2>{''.join(parts) or '<p>No failures.</p>'}"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    ).encode()
