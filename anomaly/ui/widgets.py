"""Streamlit pieces shared by the dashboard's tabs: the page style, small HTML renderers
(badge, score gauge, region table) and the inspector's decision controls."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from anomaly.ui.feedback import DECISIONS, Decision, agrees, model_verdict_decision
from anomaly.ui.views import DEFAULT_OPACITY, ERROR_COLOR, FAIL_COLOR, PASS_COLOR, VIEW_LABELS, VIEWS

CSS = f"""
<style>
[data-testid="stMainBlockContainer"] {{ padding-top:2.2rem; padding-bottom:3rem; max-width:1500px; }}
[data-testid="stSidebarUserContent"] {{ padding-top:1rem; }}
[data-testid="stSidebarHeader"] {{ height:2rem; min-height:2rem; }}
h1 {{ padding-top:0; }}
.verdict {{ display:inline-block; min-width:7rem; text-align:center; padding:.3rem 1rem;
  border-radius:.45rem; font-size:2rem; font-weight:800; letter-spacing:.08em; color:#fff; line-height:1.2; }}
.verdict-pass {{ background:{PASS_COLOR}; }}
.verdict-fail {{ background:{FAIL_COLOR}; }}
.verdict-error {{ background:{ERROR_COLOR}; font-size:1.5rem; }}
.card-head {{ display:flex; justify-content:space-between; align-items:flex-start; gap:.8rem; }}
.card-title {{ font-size:1.1rem; font-weight:700; margin:0; overflow-wrap:anywhere; }}
.card-sub {{ color:#5b6573; font-size:.85rem; margin:.15rem 0 0 0; }}
.gauge {{ position:relative; height:.55rem; background:#e6e9ee; border-radius:.3rem; margin:.3rem 0 .6rem 0; }}
.gauge-fill {{ position:absolute; left:0; top:0; bottom:0; border-radius:.3rem; }}
.gauge-mark {{ position:absolute; left:50%; top:-.25rem; bottom:-.25rem; width:2px; background:#1c2430; }}
.score-line {{ font-size:1rem; margin:.7rem 0 0 0; }}
.score-line b {{ font-variant-numeric:tabular-nums; }}
.facts {{ width:100%; border-collapse:collapse; font-size:.82rem; }}
.facts td {{ padding:.2rem 0; vertical-align:top; border:none; border-bottom:1px solid #e3e6ea; }}
.facts td:first-child {{ color:#5b6573; padding-right:.6rem; white-space:nowrap; }}
.facts td:last-child {{ overflow-wrap:anywhere; }}
.facts .path {{ font-family:monospace; font-size:.75rem; color:#5b6573; }}
.app-sub {{ color:#5b6573; margin-top:-.8rem; }}
.regions {{ width:100%; border-collapse:collapse; font-size:.82rem; table-layout:auto; }}
.regions th, .regions td {{ padding:.15rem .35rem; border-bottom:1px solid #e3e6ea; text-align:right; white-space:nowrap; }}
.regions th:first-child, .regions td:first-child {{ text-align:left; }}
.decision {{ display:inline-block; padding:.1rem .6rem; border-radius:.3rem; font-weight:700; font-size:.85rem;
  background:#e8eaf0; color:#1c2430; }}
.decision-overruled {{ background:#fff1c2; color:#7a4b00; }}
.decision-confirmed {{ background:#dff3e4; color:#1b5e20; }}
.current-item {{ outline:3px solid #1f6feb; }}
</style>
"""


# ----- small renderers ------------------------------------------------------------------
def score_gauge(score: float, threshold: float, verdict: str) -> str:
    """Score against the threshold: the threshold mark sits in the middle of the bar."""
    frac = max(0.0, min(1.0, score / (2.0 * threshold))) if threshold > 0 else 1.0
    color = FAIL_COLOR if verdict == "FAIL" else PASS_COLOR
    diff = score - threshold
    relation = "above" if diff >= 0 else "below"
    return (
        f'<p class="score-line">Score <b>{score:.3f}</b> &nbsp;·&nbsp; threshold <b>{threshold:.2f}</b> '
        f'&nbsp;<span style="color:{color}">({abs(diff):.3f} {relation})</span></p>'
        f'<div class="gauge"><div class="gauge-fill" style="width:{frac * 100:.1f}%;background:{color}"></div>'
        f'<div class="gauge-mark"></div></div>'
    )


TABLE_COLUMNS = {
    "#": st.column_config.NumberColumn(width=40),
    "Image": st.column_config.TextColumn(width="medium"),
    "Score": st.column_config.NumberColumn(format="%.3f", width=80),
    "Verdict": st.column_config.TextColumn(width=80),
    "Changed": st.column_config.CheckboxColumn(
        width=85, help="Verdict differs from the one at the calibrated threshold"
    ),
    "Regions": st.column_config.NumberColumn(width=80),
    "Largest region (px)": st.column_config.NumberColumn(width=150),
    "Error": st.column_config.TextColumn(width="large"),
}
TABLE_NAMES = {
    "path": "Image",
    "score": "Score",
    "verdict": "Verdict",
    "changed": "Changed",
    "regions": "Regions",
    "largest_region_area": "Largest region (px)",
    "error": "Error",
}


def verdict_style(v: str) -> str:
    c = {"PASS": PASS_COLOR, "FAIL": FAIL_COLOR, "ERROR": ERROR_COLOR}.get(v)
    return f"color:{c};font-weight:700" if c else ""


def facts_table(rows: list[tuple[str, str]]) -> str:
    def cell(k: str, v: str) -> str:
        v = html.escape(str(v))
        return f'<span class="path">{v}</span>' if k == "Data folder" else v

    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{cell(k, v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def card_head(title: str, verdict: str, sub: str = "") -> str:
    """Name (and a detail line) on the left, the big PASS/FAIL/ERROR badge on the right."""
    sub_html = f'<p class="card-sub">{sub}</p>' if sub else ""
    return (
        f'<div class="card-head"><div><p class="card-title">{html.escape(title)}</p>{sub_html}</div>'
        f'<span class="verdict verdict-{verdict.lower()}">{verdict}</span></div>'
    )


def regions_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The region table as HTML: it wraps with the column instead of scrolling, so its
    last column is never cut off."""
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f'<table class="regions"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def view_controls(prefix: str) -> tuple[str, float]:
    """Which picture to show beside the original (heatmap | outline only | original) and
    the heat's opacity."""
    row = st.container(horizontal=True, vertical_alignment="bottom")
    view = (
        row.segmented_control(
            "Show beside the original",
            list(VIEWS),
            default="heatmap",
            key=f"{prefix}_view",
            format_func=lambda v: VIEW_LABELS[v],
            width="content",
        )
        or "heatmap"
    )
    opacity = row.slider(
        "Heat opacity", 0.0, 1.0, DEFAULT_OPACITY, 0.05, key=f"{prefix}_opacity", disabled=view != "heatmap", width=220
    )
    return str(view), float(opacity)


def decision_badge(rec: Mapping[str, Any] | None, verdict: str) -> str:
    if not rec:
        return '<span class="decision">Not reviewed</span>'
    ok = agrees(rec["decision"], verdict)
    kind = "confirmed" if ok else "overruled" if ok is False else "unsure"
    word = {"confirmed": "confirmed", "overruled": "overruled", "unsure": "unsure"}[kind]
    note = f" · {html.escape(rec['note'])}" if rec.get("note") else ""
    return (
        f'<span class="decision decision-{kind}" data-decision="{rec["decision"]}">Inspector: '
        f"{rec['decision']} ({word}){note}</span>"
    )


SHORTCUTS = {"confirm": "Y", "defect": "D", "good": "G", "unsure": "U"}


def decision_controls(
    key: str,
    verdict: str,
    current: Mapping[str, Any] | None,
    decide: Callable[[Decision | None, str], None],
    shortcuts: bool = False,
) -> None:
    """Confirm the verdict, or overrule it (defect / good / unsure), with a note. `decide`
    gets (decision or None to undo, note); it runs in the button's callback, before the
    page is drawn again, so the page shows the decision at once."""
    note_key = f"{key}_note"
    if note_key not in st.session_state:
        st.session_state[note_key] = (current or {}).get("note", "")

    def cb(decision: Decision | None) -> None:
        decide(decision, str(st.session_state.get(note_key, "")))

    st.markdown(decision_badge(current, verdict), unsafe_allow_html=True)
    row = st.container(horizontal=True, vertical_alignment="bottom", gap="small")
    confirm = model_verdict_decision(verdict)
    sc = SHORTCUTS if shortcuts else {}
    if confirm:
        row.button(
            f"Confirm {verdict}",
            key=f"{key}_confirm",
            on_click=cb,
            args=(confirm,),
            type="primary",
            shortcut=sc.get("confirm"),
            icon=":material/check:",
        )
    for d in DECISIONS:
        label = {"defect": "Defect", "good": "Good", "unsure": "Unsure"}[d]
        row.button(label, key=f"{key}_{d}", on_click=cb, args=(d,), shortcut=sc.get(d))
    if current:
        row.button("Undo", key=f"{key}_undo", on_click=cb, args=(None,), type="tertiary")
    st.text_input("Note", key=note_key, placeholder="optional: what you saw", label_visibility="collapsed")


def summary_metrics(frame: pd.DataFrame) -> None:
    counts = frame["verdict"].value_counts()
    c = st.columns(4)
    c[0].metric("Images", len(frame))
    c[1].metric("PASS", int(counts.get("PASS", 0)))
    c[2].metric("FAIL", int(counts.get("FAIL", 0)))
    c[3].metric("Unreadable", int(counts.get("ERROR", 0)))
