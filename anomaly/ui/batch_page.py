"""The dashboard's Batch tab: every inspected image in one table, the score histogram with
the threshold, and the downloads (results CSV, overlays ZIP, HTML report, the labelled
folder of the inspector's decisions) with a threshold suggested from those decisions.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from anomaly.scoring.schema import RESULTS_CSV
from anomaly.ui import feedback, logic, report, tables, views, widgets
from anomaly.ui.sidebar import set_threshold


def histogram(frame: pd.DataFrame, threshold: float, calibrated: float) -> alt.LayerChart:
    data = frame[frame["verdict"] != "ERROR"][["path", "score", "verdict"]]
    scores = data["score"].tolist() + [threshold, calibrated]
    lo, hi = min(scores), max(scores)
    pad = max(0.05, 0.08 * (hi - lo))
    lo, hi = max(0.0, lo - pad), hi + pad
    bars = (
        alt.Chart(data)
        .mark_bar(opacity=0.9)
        .encode(
            x=alt.X(
                "score:Q",
                bin=alt.Bin(maxbins=40, extent=[lo, hi]),
                title="Anomaly score",
                scale=alt.Scale(domain=[lo, hi]),
                axis=alt.Axis(format=".2f"),
            ),
            y=alt.Y("count():Q", title="Images", stack=True, axis=alt.Axis(tickMinStep=1, format="d")),
            color=alt.Color(
                "verdict:N",
                title="Verdict",
                scale=alt.Scale(domain=["PASS", "FAIL"], range=[views.PASS_COLOR, views.FAIL_COLOR]),
            ),
            tooltip=[alt.Tooltip("count():Q", title="Images")],
        )
    )
    lines = pd.DataFrame({"x": [threshold, calibrated], "what": ["threshold", "calibrated"]})
    if abs(threshold - calibrated) < 1e-9:
        lines = lines.iloc[:1]
    rules = (
        alt.Chart(lines)
        .mark_rule(strokeWidth=2)
        .encode(
            x="x:Q",
            color=alt.value("#1c2430"),
            strokeDash=alt.StrokeDash(
                "what:N", title="Line", scale=alt.Scale(domain=["threshold", "calibrated"], range=[[1, 0], [5, 4]])
            ),
            tooltip=[alt.Tooltip("what:N", title=""), alt.Tooltip("x:Q", title="Score", format=".2f")],
        )
    )
    return (bars + rules).properties(height=260)


def batch_report(
    items: list[logic.Item], frame: pd.DataFrame, ctx: tables.ExportContext, decisions: dict[str, dict]
) -> bytes:
    parts = []
    for it, insp in zip(items, logic.decide(items, ctx.threshold)):
        if insp is None or insp.verdict != "FAIL":
            continue
        rec = decisions.get(it.digest) or {}
        panels = [
            (c, logic.item_view(it, insp, v, 0.6, report.PANEL_MAX_SIDE))
            for c, v in (("Original", "original"), ("Heatmap", "heatmap"), ("Outline", "outline"))
        ]
        parts.append(
            report.ReportPart(
                it.name,
                insp.score,
                panels,
                logic.region_rows(it.regions(insp), it.size),
                rec.get("decision", ""),
                rec.get("note", ""),
            )
        )
    facts = [
        ("Model", ctx.model),
        ("Model digest", ctx.model_digest or "unknown"),
        ("Threshold", f"{ctx.threshold:.3f}"),
        ("Date", ctx.date),
        ("Operator", ctx.operator or "—"),
    ]
    return report.html_report(
        "Inspection report", facts, list(frame["score"]), list(frame["verdict"]), ctx.threshold, parts
    )


def batch_tab(
    items: list[logic.Item],
    frame: pd.DataFrame,
    ctx: tables.ExportContext,
    calibrated: float,
    store: feedback.DecisionStore,
) -> None:
    if not items:
        st.info("No images yet. Upload images in the **Inspect** tab; all of them are listed here.")
        return
    widgets.summary_metrics(frame)
    only_fail = st.toggle("Show failures only", key="batch_only_fail")
    shown = frame[frame["verdict"] != "PASS"] if only_fail else frame
    view = shown[list(widgets.TABLE_NAMES)].rename(columns=widgets.TABLE_NAMES)
    st.dataframe(
        view.style.map(widgets.verdict_style, subset=["Verdict"]),
        hide_index=True,
        width="stretch",
        key="batch_table",
        placeholder="—",
        column_config=widgets.TABLE_COLUMNS,
    )
    st.caption("Click a column header to sort.")
    st.markdown("**Score distribution**")
    st.altair_chart(histogram(frame, ctx.threshold, calibrated), width="stretch")
    decisions = {k: v for k, v in store.load().items() if k in {it.digest for it in items}}
    c1, c2, c3, c4 = st.columns(4)
    c1.download_button(
        "Download results (CSV)",
        tables.results_csv(frame, ctx),
        file_name=RESULTS_CSV,
        mime="text/csv",
        key="dl_csv",
        on_click="ignore",  # a download changes nothing on the page
        icon=":material/download:",
        help="With the threshold, model, model digest, date and operator on every row",
    )
    c2.download_button(
        "Download overlays (ZIP)",
        lambda: tables.overlays_zip(items, ctx, calibrated),
        file_name="overlays.zip",
        mime="application/zip",
        key="dl_zip",
        on_click="ignore",  # a download changes nothing on the page
        icon=":material/download:",
        help="Heatmap overlays with defect outlines, plus results.csv",
    )
    c3.download_button(
        "Download report (HTML)",
        lambda: batch_report(items, frame, ctx, decisions),
        file_name="inspection-report.html",
        mime="text/html",
        key="dl_report",
        on_click="ignore",  # a download changes nothing on the page
        icon=":material/description:",
        help="Printable: summary, histogram, every failure",
    )

    def labelled() -> bytes:
        images = {
            k: (store.folder / r["image"]).read_bytes()
            for k, r in decisions.items()
            if r.get("image") and (store.folder / r["image"]).is_file()
        }
        return feedback.labelled_zip(decisions, images)

    c4.download_button(
        "Export labelled folder (ZIP)",
        labelled,
        file_name="labelled.zip",
        mime="application/zip",
        key="dl_labelled",
        on_click="ignore",  # a download changes nothing on the page
        icon=":material/download:",
        disabled=not decisions,
        help="Your decisions as an MVTec folder: test/good and test/defect",
    )
    scores = dict(zip([it.digest for it in items], frame["score"]))
    defect = [scores.get(k, float("nan")) for k, r in decisions.items() if r["decision"] == "defect"]
    good = [scores.get(k, float("nan")) for k, r in decisions.items() if r["decision"] == "good"]
    if defect:
        new = feedback.suggest_threshold(defect, good, ctx.threshold)
        row = st.container(horizontal=True, vertical_alignment="center")
        row.caption(f"From your {len(defect)} defect and {len(good)} good decision(s): threshold **{new:.3f}**.")
        row.button(
            "Use it",
            key="apply_suggested",
            on_click=set_threshold,
            args=(round(new - 0.005, 2),),
            disabled=abs(new - ctx.threshold) < 1e-9,
        )
