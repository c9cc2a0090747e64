"""The Review tab: step through a folder written by `anomaly score`, failures first, see
each part clean beside its heatmap or outlines, confirm or overrule its verdict, and
export the decisions (labelled folder) and a printable report."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from anomaly.contract import check_seal
from anomaly.errors import ModelFileError
from anomaly.inspection.imageio import ImageReadError
from anomaly.ui import feedback, report, review, widgets
from anomaly.ui.views import blend, draw_boxes, draw_outlines


def _step(delta: int, count: int) -> None:
    pos = int(st.session_state.get("review_pos", 1)) + delta
    st.session_state["review_pos"] = min(max(pos, 1), max(count, 1))


@st.cache_data(max_entries=8, show_spinner=False)
def _model_digest(path: str, mtime_ns: int) -> str:
    """The scoring model's seal, when its file is still where run.json says."""
    try:
        return check_seal(Path(path), Path(path).read_bytes())
    except (OSError, ModelFileError, UnicodeDecodeError):
        return ""


def run_context(run: review.ScoredRun) -> tuple[float | None, str, str]:
    """(threshold, model name, model digest) the run decided with."""
    threshold = next(
        (float(run.run[k]) for k in ("image_threshold", "threshold") if isinstance(run.run.get(k), (int, float))), None
    )
    model = str(run.run.get("model") or "")
    digest = ""
    if model and Path(model).is_file():
        digest = _model_digest(model, Path(model).stat().st_mtime_ns)
    return threshold, Path(model).name if model else "unknown", digest or str(run.run.get("model_sha256") or "")


def part_key(rel: str) -> str:
    return hashlib.sha1(rel.encode()).hexdigest()[:16]


def pictures(
    run: review.ScoredRun, rel: str, view: str, opacity: float
) -> tuple[Any, Any, str, tuple[int, int] | None, list[str]]:
    """(original or None, chosen view or None, caption of the view, original size, notes)."""
    notes: list[str] = []
    original_path, overlay_path = review.original_image(run, rel), review.saved_overlay(run, rel)
    original = overlay = None
    try:
        original = review.load_picture(original_path) if original_path else None
        overlay = review.load_picture(overlay_path) if overlay_path else None
    except ImageReadError as exc:
        notes.append(str(exc))
    if original is None:
        if overlay is None:
            return None, None, "", None, notes + ["Neither the original image nor a saved overlay was found."]
        return None, overlay.rgb, "Saved overlay (the original is no longer where it was scored)", overlay.size, notes
    base = original.rgb
    if original.transparent:
        notes.append("Transparent pixels are shown on black, as the model saw them.")
    if view == "original":
        return base, base, "Original", original.size, notes
    if view == "heatmap":
        if overlay is None:
            notes.append("No overlay was saved for this image (score with `--overlays` to keep them).")
            return base, base, "Original (no saved overlay)", original.size, notes
        return (
            base,
            blend(base, overlay.rgb, opacity),
            f"Heatmap (saved overlay at {opacity:.0%})",
            original.size,
            notes,
        )
    mask_path = review.saved_mask(run, rel)
    mask = review.load_mask(mask_path, base.shape[:2]) if mask_path else None
    if mask is not None:
        return base, draw_outlines(base, mask), "Outline only (saved mask)", original.size, notes
    scale = base.shape[1] / original.size[0]
    boxes = review.region_boxes(review.records(run).get(rel), scale)
    return base, draw_boxes(base, boxes), "Outline only (region boxes)", original.size, notes


def review_tab(operator: str) -> None:
    folder = st.text_input(
        "Output folder of `anomaly score`",
        key="review_folder",
        placeholder="/path/to/scored-output (contains results.csv)",
    )
    if not folder.strip():
        st.info("Enter the folder that `anomaly score` wrote (it contains results.csv). Failures are listed first.")
        return
    try:
        run = review.load_scored_folder(folder)
    except review.ReviewError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    store = feedback.DecisionStore(run.folder)
    decisions = store.load()
    threshold, model, digest = run_context(run)
    counts = run.counts()
    done = feedback.counts(decisions)
    c = st.columns(5)
    c[0].metric("Images", len(run.table))
    c[1].metric("FAIL", counts["FAIL"])
    c[2].metric("Unreadable", counts["ERROR"])
    c[3].metric("PASS", counts["PASS"])
    c[4].metric("Reviewed", len(decisions), help=f"{done['overruled']} overruled; saved in {store.path}")
    st.caption(
        " · ".join(
            p
            for p in (
                run.describe(),
                "verdicts as recorded by that run (the sidebar threshold applies to Inspect and Batch)",
            )
            if p
        )
    )
    only_fail = st.toggle("Failures and errors only", key="review_only_fail")
    table = run.table[run.table["verdict"] != "PASS"].reset_index(drop=True) if only_fail else run.table
    if table.empty:
        st.success("Nothing to show: no failures or unreadable images in this run.")
        return
    n = len(table)
    if int(st.session_state.get("review_pos", 1)) > n:
        st.session_state["review_pos"] = 1
    review_table(table, decisions, n)
    pos = paging(n, "top")
    row = table.iloc[pos - 1]
    review_card(run, row, decisions, store, (threshold, model, digest), operator)
    paging(n, "bottom")
    st.caption("Keys: ← → previous / next · Y confirm · D defect · G good · U unsure")
    exports(run, table, decisions, store, (threshold, model, digest), operator)


def review_table(table: pd.DataFrame, decisions: dict[str, dict[str, Any]], n: int) -> None:
    """The run's rows with the current one highlighted; clicking a row opens it."""
    view = table[[c for c in widgets.TABLE_NAMES if c in table.columns]].rename(columns=widgets.TABLE_NAMES)
    view.insert(0, "#", range(1, len(view) + 1))
    view.insert(
        len(view.columns) - 1,
        "Inspector",
        [decisions.get(part_key(str(p)), {}).get("decision", "") for p in table["path"]],
    )
    current = int(st.session_state.get("review_pos", 1)) - 1

    def highlight(r: pd.Series) -> list[str]:
        return ["background-color:#dbe8ff;font-weight:700" if r.name == current else "" for _ in r]

    styled = view.style.apply(highlight, axis=1).map(widgets.verdict_style, subset=["Verdict"])
    event = st.dataframe(
        styled,
        hide_index=True,
        width="stretch",
        height=min(320, 38 + 35 * n),
        column_config={
            **widgets.TABLE_COLUMNS,
            "Inspector": st.column_config.TextColumn(width=90),
            "Error": st.column_config.TextColumn(width="medium"),
        },
        key="review_table",
        placeholder="—",
        on_select="rerun",
        selection_mode="single-row",
    )
    rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    # a click moves to that row once; afterwards the buttons and keys move freely
    if rows and rows != st.session_state.get("_review_clicked"):
        st.session_state["review_pos"] = int(rows[0]) + 1
    st.session_state["_review_clicked"] = rows


def paging(n: int, where: str) -> int:
    """Previous / next (keys ← →, on the top row only: a shortcut belongs to one button)."""
    c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    top = where == "top"
    c1.button(
        "◀ Previous",
        key=f"review_prev_{where}",
        on_click=_step,
        args=(-1, n),
        width="stretch",
        shortcut="Left" if top else None,
    )
    c2.button(
        "Next ▶",
        key=f"review_next_{where}",
        on_click=_step,
        args=(1, n),
        width="stretch",
        shortcut="Right" if top else None,
    )
    if top:
        return int(c3.number_input(f"Item # (of {n})", min_value=1, max_value=n, step=1, key="review_pos"))
    c3.caption(f"Item {int(st.session_state.get('review_pos', 1))} of {n}")
    return int(st.session_state.get("review_pos", 1))


def review_card(
    run: review.ScoredRun,
    row: pd.Series,
    decisions: dict[str, dict[str, Any]],
    store: feedback.DecisionStore,
    context: tuple[float | None, str, str],
    operator: str,
) -> None:
    threshold, model, digest = context
    rel = str(row["path"])
    verdict = str(row["verdict"]) if str(row["verdict"]) in ("PASS", "FAIL") else "ERROR"
    score = row["score"]
    with st.container(border=True, key="review_card"):
        head = widgets.card_head(rel, verdict)
        if verdict != "ERROR" and score == score:
            head += (
                widgets.score_gauge(float(score), float(threshold), verdict)
                if threshold is not None
                else f'<p class="score-line">Score <b>{float(score):.3f}</b></p>'
            )
        st.markdown(head, unsafe_allow_html=True)
        if verdict == "ERROR":  # the reason once; there is no picture to look for
            st.error(str(row.get("error") or "this image could not be scored"), icon=":material/error:")
            return
        key = part_key(rel)

        def decide(decision: feedback.Decision | None, note: str) -> None:
            store.record(
                key,
                rel,
                decision,
                verdict=verdict,
                score=float(score),
                threshold=threshold,
                model=model,
                model_digest=digest,
                note=note,
                operator=operator,
            )

        widgets.decision_controls(f"rv_{key}", verdict, decisions.get(key), decide, shortcuts=True)
        view, opacity = widgets.view_controls("review")
        original, shown, caption, size, notes = pictures(run, rel, view, opacity)
        c_orig, c_view = st.columns(2, gap="small")
        if original is not None:
            c_orig.image(original, caption="Original", width="stretch", alt=f"Original {rel}")
        if shown is not None:
            c_view.image(shown, caption=caption, width="stretch", alt=f"Review {rel}")
        for note in notes:
            st.caption(note)
        rec = review.records(run).get(rel) or {}
        rows = [
            {
                "#": i + 1,
                "Position (x, y)": f"{r['x']}, {r['y']}",
                "Size": f"{r['width']} × {r['height']}",
                "Area (px)": r.get("area", ""),
                "Peak": round(float(r.get("peak", 0.0)), 3),
            }
            for i, r in enumerate(rec.get("regions") or [])
        ]
        if rows:
            st.markdown(
                f"**Defect regions ({len(rows)})**, original pixels" + widgets.regions_html(rows),
                unsafe_allow_html=True,
            )
        elif verdict == "FAIL":
            st.caption(
                f"{int(row['regions'] or 0)} defect region(s); largest {int(row['largest_region_area'] or 0)} px "
                "(positions are in results.jsonl, not found here)"
            )


def exports(
    run: review.ScoredRun,
    table: pd.DataFrame,
    decisions: dict[str, dict[str, Any]],
    store: feedback.DecisionStore,
    context: tuple[float | None, str, str],
    operator: str,
) -> None:
    threshold, model, digest = context
    st.markdown("**Decisions and report**")
    scores = dict(zip(run.table["path"].astype(str), run.table["score"]))
    defect = [scores.get(r["path"], float("nan")) for r in decisions.values() if r["decision"] == "defect"]
    good = [scores.get(r["path"], float("nan")) for r in decisions.values() if r["decision"] == "good"]
    if threshold is not None and defect:
        new = feedback.suggest_threshold(defect, good, threshold)
        st.caption(
            f"From {len(defect)} confirmed defect(s) and {len(good)} good part(s): suggested threshold "
            f"**{new:.3f}** (run: {threshold:.3f}). Re-score with `anomaly score --threshold {new:.3f}`."
        )
    c1, c2 = st.columns(2)

    def labelled() -> bytes:
        images = {}
        for key, rec in decisions.items():
            path = review.original_image(run, rec["path"])
            if path is not None:
                images[key] = path.read_bytes()
        return feedback.labelled_zip(decisions, images, name=f"{run.folder.name}-labelled")

    c1.download_button(
        "Export labelled folder (ZIP)",
        labelled,
        file_name=f"{run.folder.name}-labelled.zip",
        mime="application/zip",
        key="review_dl_labelled",
        on_click="ignore",  # a download changes nothing on the page
        icon=":material/download:",
        disabled=not decisions,
        help="MVTec layout: test/good and test/defect, for `anomaly train --defects` and `anomaly evaluate`",
    )

    def html() -> bytes:
        fails = table[table["verdict"] == "FAIL"]
        parts = []
        for _, r in fails.iterrows():
            original, heat, _, size, _ = pictures(run, str(r["path"]), "heatmap", 0.6)
            outline = pictures(run, str(r["path"]), "outline", 0.6)[1]
            panels = [
                (c, p) for c, p in (("Original", original), ("Heatmap", heat), ("Outline", outline)) if p is not None
            ]
            rec = decisions.get(part_key(str(r["path"]))) or {}
            regions = (review.records(run).get(str(r["path"])) or {}).get("regions") or []
            parts.append(
                report.ReportPart(
                    str(r["path"]),
                    float(r["score"]),
                    panels,
                    [{k: g.get(k) for k in ("x", "y", "width", "height", "area")} for g in regions],
                    rec.get("decision", ""),
                    rec.get("note", ""),
                )
            )
        facts = [
            ("Folder", str(run.folder)),
            ("Model", model),
            ("Model digest", digest or "unknown"),
            ("Threshold", f"{threshold:.3f}" if threshold is not None else "unknown"),
            ("Scored", str(run.run.get("started", "unknown"))),
            ("Report date", feedback.now()),
            ("Operator", operator or "—"),
        ]
        return report.html_report(
            f"Inspection report: {run.folder.name}",
            facts,
            list(run.table["score"]),
            list(run.table["verdict"]),
            threshold or 1.0,
            parts,
        )

    c2.download_button(
        "Download report (HTML)",
        html,
        file_name=f"{run.folder.name}-report.html",
        mime="text/html",
        key="review_dl_report",
        on_click="ignore",  # a download changes nothing on the page
        icon=":material/description:",
        help="Printable: summary, histogram, every failure with original, heatmap and outline",
    )
