"""Inspection dashboard: `streamlit run ui/app.py` (or `anomaly ui`).

Sidebar: the model (a file from models/ or an upload) with its metadata, and the
decision threshold. Main area: Inspect (upload images, see verdicts, heatmaps and
defect regions), Batch (table, histogram, downloads) and Review (browse a folder
written by `anomaly score`, failures first).

The model runs once per image, at full resolution; moving the threshold re-decides
from the stored heatmaps. Only the torch-free runtime is used.

Test hook: `st.session_state["extra_inputs"]` may hold a list of (name, bytes) pairs;
they are inspected like uploads (the "Load sample images" button fills it too).
"""

from __future__ import annotations

import html
import sys
import tempfile
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from anomaly.errors import ModelFileError
from anomaly.inspection.imageio import ImageReadError, read_image, to_uint8
from anomaly.inspection.inspector import Inspector
from anomaly.scoring.schema import RESULTS_CSV
from anomaly.ui import logic

PAGE_SIZE = 8  # image cards per page in the Inspect tab
EXTRA_INPUTS = "extra_inputs"

CSS = f"""
<style>
[data-testid="stMainBlockContainer"] {{ padding-top:2.2rem; padding-bottom:3rem; max-width:1500px; }}
[data-testid="stSidebarUserContent"] {{ padding-top:1rem; }}
[data-testid="stSidebarHeader"] {{ height:2rem; min-height:2rem; }}
h1 {{ padding-top:0; }}
.verdict {{ display:inline-block; min-width:7rem; text-align:center; padding:.3rem 1rem;
  border-radius:.45rem; font-size:2rem; font-weight:800; letter-spacing:.08em; color:#fff; line-height:1.2; }}
.verdict-pass {{ background:{logic.PASS_COLOR}; }}
.verdict-fail {{ background:{logic.FAIL_COLOR}; }}
.verdict-error {{ background:{logic.ERROR_COLOR}; font-size:1.5rem; }}
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
</style>
"""


# ----- cached resources (shared across reruns and users) ---------------------------------
@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def load_model_file(path: str, mtime_ns: int) -> Inspector:
    """One onnxruntime session per model file (a changed file gets a new session)."""
    return Inspector(path)


@st.cache_resource(show_spinner="Loading uploaded model…", max_entries=4)
def load_model_upload(sha1: str, _data: bytes, name: str) -> Inspector:
    """One session per uploaded model, keyed by the hash of its bytes."""
    folder = Path(tempfile.gettempdir()) / "anomaly-ui-models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha1}.onnx"
    if not path.is_file():
        path.write_bytes(_data)
    try:
        return Inspector(path)
    except ModelFileError as exc:
        raise ModelFileError(str(exc).replace(str(path), name)) from None


# ----- small renderers ------------------------------------------------------------------
def score_gauge(score: float, threshold: float, verdict: str) -> str:
    """Score against the threshold: the threshold mark sits in the middle of the bar."""
    frac = max(0.0, min(1.0, score / (2.0 * threshold))) if threshold > 0 else 1.0
    color = logic.FAIL_COLOR if verdict == "FAIL" else logic.PASS_COLOR
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
    "Changed": st.column_config.CheckboxColumn(width=85, help="Verdict differs from the one at the calibrated threshold"),
    "Regions": st.column_config.NumberColumn(width=80),
    "Largest region (px)": st.column_config.NumberColumn(width=150),
    "Error": st.column_config.TextColumn(width="large"),
}
TABLE_NAMES = {"path": "Image", "score": "Score", "verdict": "Verdict", "changed": "Changed", "regions": "Regions",
               "largest_region_area": "Largest region (px)", "error": "Error"}


def verdict_style(v: str) -> str:
    c = {"PASS": logic.PASS_COLOR, "FAIL": logic.FAIL_COLOR, "ERROR": logic.ERROR_COLOR}.get(v)
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
    return (f'<div class="card-head"><div><p class="card-title">{html.escape(title)}</p>{sub_html}</div>'
            f'<span class="verdict verdict-{verdict.lower()}">{verdict}</span></div>')


# ----- sidebar: model and threshold -----------------------------------------------------
def sidebar_model() -> tuple[Inspector | None, str, str]:
    """Select or upload a model; returns (inspector or None, cache key, file name)."""
    sb = st.sidebar
    sb.header("Model")
    models = logic.list_models()
    inspector, key, label = None, "", ""
    choice = None
    if models:
        choice = sb.selectbox("Model file (models/)", [p.name for p in models], index=0, key="model_choice")
    else:
        sb.warning(f"No .onnx models in {logic.MODELS_DIR}. Export one with `anomaly export` or upload one below.")
    with sb.expander("Upload another model", expanded=False):
        upload = st.file_uploader("ONNX model exported with `anomaly export`", type=["onnx"], key="model_upload")
    if upload is not None:
        data = upload.getvalue()
        sha1 = logic.digest(data)
        try:
            inspector, key, label = load_model_upload(sha1, data, upload.name), f"upload:{sha1}", upload.name
            sb.caption(f"Using uploaded model **{upload.name}**.")
        except ModelFileError as exc:
            sb.error(f"Cannot use the uploaded model. {exc}")
    if inspector is None and choice is not None:
        path = logic.MODELS_DIR / choice
        try:
            stat = path.stat()
            inspector, key, label = load_model_file(str(path), stat.st_mtime_ns), f"file:{path}:{stat.st_mtime_ns}", choice
        except (ModelFileError, OSError) as exc:
            sb.error(f"Cannot load {choice}. {exc}")
    return inspector, key, label


def sidebar_model_details(inspector: Inspector) -> None:
    with st.sidebar.expander("Model details", expanded=True):
        st.markdown(facts_table(logic.model_facts(inspector)), unsafe_allow_html=True)


def _reset_threshold(calibrated: float) -> None:
    st.session_state["threshold"] = calibrated


def sidebar_threshold(inspector: Inspector, model_key: str):
    """The decision threshold slider (starts at the calibrated value); returns
    (threshold, a sidebar slot for the 'changed verdicts' note)."""
    calibrated = float(inspector.image_threshold)
    if st.session_state.get("threshold_model") != model_key or "threshold" not in st.session_state:
        st.session_state["threshold"] = calibrated
        st.session_state["threshold_model"] = model_key
    top = max(3.0, round(3.0 * calibrated, 2))
    st.session_state["threshold"] = min(max(float(st.session_state["threshold"]), 0.0), top)
    sb = st.sidebar
    sb.header("Decision threshold")
    threshold = sb.slider("Image threshold (score at or above = FAIL)", min_value=0.0, max_value=top, step=0.01,
                          format="%.2f", key="threshold",
                          help="Scores are calibrated so that 1.00 is the threshold chosen when the model was trained.")
    row = sb.container(horizontal=True, vertical_alignment="center")
    row.button("Reset to calibrated", key="reset_threshold", on_click=_reset_threshold, args=(calibrated,),
               disabled=abs(float(threshold) - calibrated) < 1e-9, icon=":material/restart_alt:")
    row.caption(f"Calibrated: **{calibrated:.2f}**")
    return float(threshold), sb.empty()


# ----- Inspect tab ----------------------------------------------------------------------
def _load_samples() -> None:
    st.session_state[EXTRA_INPUTS] = logic.sample_files()


def _clear_samples() -> None:
    st.session_state[EXTRA_INPUTS] = []


def collect_inputs() -> list[tuple[str, bytes]]:
    uploads = st.file_uploader(
        "Drop images here or browse (PNG, JPEG, BMP, TIFF; one or many)", accept_multiple_files=True,
        key="image_uploader", help="Images of any size are inspected at full resolution.")
    row = st.container(horizontal=True)
    row.button("Load sample images", key="load_samples", on_click=_load_samples, type="primary",
              help="A few good and defective washers from sample_images/washer/test")
    row.button("Clear samples", key="clear_samples", on_click=_clear_samples,
              disabled=not st.session_state.get(EXTRA_INPUTS))
    files = [(u.name, u.getvalue()) for u in (uploads or [])]
    files += [(str(n), bytes(b)) for n, b in st.session_state.get(EXTRA_INPUTS) or []]
    return files


def inspected_items(inspector: Inspector, model_key: str, files: list[tuple[str, bytes]]) -> list[logic.Item]:
    """Inspect what is new (per session cache keyed by model + file content + name)."""
    cache: dict = st.session_state.setdefault("_inspected", {})
    keys = [(model_key, logic.digest(data), name) for name, data in files]
    todo = [(k, f) for k, f in zip(keys, files) if k not in cache]
    if todo:
        bar = st.progress(0.0, text=f"Inspecting {len(todo)} image(s)…")
        new = logic.inspect_files(inspector, [f for _, f in todo],
                                  progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                            text=f"Inspecting… {done}/{total}"))
        bar.empty()
        for (k, _), item in zip(todo, new):
            cache[k] = item
    for k in [k for k in cache if k not in set(keys)]:  # forget removed uploads
        del cache[k]
    return [cache[k] for k in keys]


def error_card(item: logic.Item) -> None:
    with st.container(border=True):
        st.markdown(card_head(item.name, "ERROR", "This file was not inspected; the other images were."),
                    unsafe_allow_html=True)
        st.error(f"Could not inspect this file. {item.error}", icon=":material/error:")


def image_card(item: logic.Item, insp) -> None:
    """Image, heatmap overlay with outlines, and verdict + score + regions side by side."""
    w, h = item.size
    size = f"{w} × {h} px"
    if item.downscaled:
        dw, dh = item.display_image.shape[1], item.display_image.shape[0]
        size += f" · shown at {dw} × {dh}, inspected at full size"
    with st.container(border=True):
        c_img, c_heat, c_info = st.columns([1, 1, 1.2], gap="medium")
        c_img.image(item.display_image, caption="Image", width="stretch", alt=f"Image {item.name}")
        c_heat.image(logic.display_overlay(item, insp), caption="Heatmap + defect outlines", width="stretch",
                     alt=f"Heatmap {item.name}")
        with c_info:
            st.markdown(card_head(item.name, insp.verdict, size)
                        + score_gauge(insp.score, insp.image_threshold, insp.verdict), unsafe_allow_html=True)
            regions = logic.regions_frame(insp, item.size)
            if len(regions):
                st.markdown(f"**Defect regions ({len(regions)})**, outlined in red (original pixels)")
                st.dataframe(regions, hide_index=True, width="stretch", height=min(38 + 35 * len(regions), 180),
                             column_config={"#": st.column_config.NumberColumn(width=28),
                                            "Area %": st.column_config.NumberColumn(format="%.2f"),
                                            "Peak": st.column_config.NumberColumn(format="%.3f",
                                                                                  help="Highest score in the region")})
            else:
                st.caption("No defect regions at this threshold.")


def summary_metrics(frame: pd.DataFrame) -> None:
    counts = frame["verdict"].value_counts()
    c = st.columns(4)
    c[0].metric("Images", len(frame))
    c[1].metric("PASS", int(counts.get("PASS", 0)))
    c[2].metric("FAIL", int(counts.get("FAIL", 0)))
    c[3].metric("Unreadable", int(counts.get("ERROR", 0)))


def inspect_tab(items: list[logic.Item], decided, frame: pd.DataFrame) -> None:
    if not items:
        st.info("Drop one or more images above, or press **Load sample images** to try the bundled examples.")
        return
    summary_metrics(frame)
    order = list(range(len(items)))
    if len(items) > PAGE_SIZE:
        c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
        fails_first = c2.toggle("Failures first", value=False, key="inspect_fails_first")
        if fails_first:
            rank = frame["verdict"].map(logic.VERDICT_ORDER).to_numpy()
            score = frame["score"].fillna(0.0).to_numpy()
            order.sort(key=lambda i: (rank[i], -score[i]))
        pages = (len(items) + PAGE_SIZE - 1) // PAGE_SIZE
        page = c1.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1, key="inspect_page")
        order = order[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    for i in order:
        if decided[i] is None:
            error_card(items[i])
        else:
            image_card(items[i], decided[i])


# ----- Batch tab ------------------------------------------------------------------------
def histogram(frame: pd.DataFrame, threshold: float, calibrated: float) -> alt.LayerChart:
    data = frame[frame["verdict"] != "ERROR"][["path", "score", "verdict"]]
    scores = data["score"].tolist() + [threshold, calibrated]
    lo, hi = min(scores), max(scores)
    pad = max(0.05, 0.08 * (hi - lo))
    lo, hi = max(0.0, lo - pad), hi + pad
    bars = alt.Chart(data).mark_bar(opacity=0.9).encode(
        x=alt.X("score:Q", bin=alt.Bin(maxbins=40, extent=[lo, hi]), title="Anomaly score",
                scale=alt.Scale(domain=[lo, hi]), axis=alt.Axis(format=".2f")),
        y=alt.Y("count():Q", title="Images", stack=True, axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("verdict:N", title="Verdict",
                        scale=alt.Scale(domain=["PASS", "FAIL"], range=[logic.PASS_COLOR, logic.FAIL_COLOR])),
        tooltip=[alt.Tooltip("count():Q", title="Images")],
    )
    lines = pd.DataFrame({"x": [threshold, calibrated], "what": ["threshold", "calibrated"]})
    if abs(threshold - calibrated) < 1e-9:
        lines = lines.iloc[:1]
    rules = alt.Chart(lines).mark_rule(strokeWidth=2).encode(
        x="x:Q",
        color=alt.value("#1c2430"),
        strokeDash=alt.StrokeDash("what:N", title="Line",
                                  scale=alt.Scale(domain=["threshold", "calibrated"], range=[[1, 0], [5, 4]])),
        tooltip=[alt.Tooltip("what:N", title=""), alt.Tooltip("x:Q", title="Score", format=".2f")],
    )
    return (bars + rules).properties(height=260)


def batch_tab(items: list[logic.Item], frame: pd.DataFrame, threshold: float, calibrated: float) -> None:
    if not items:
        st.info("No images yet. Upload images in the **Inspect** tab; all of them are listed here.")
        return
    summary_metrics(frame)
    only_fail = st.toggle("Show failures only", key="batch_only_fail")
    shown = frame[frame["verdict"] != "PASS"] if only_fail else frame
    view = shown[list(TABLE_NAMES)].rename(columns=TABLE_NAMES)

    st.dataframe(view.style.map(verdict_style, subset=["Verdict"]), hide_index=True, width="stretch",
                 key="batch_table", placeholder="—", column_config=TABLE_COLUMNS)
    st.caption("Click a column header to sort.")
    st.markdown("**Score distribution**")
    st.altair_chart(histogram(frame, threshold, calibrated), width="stretch")
    c1, c2, _ = st.columns([1, 1, 2])
    c1.download_button("Download results (CSV)", logic.results_csv(frame), file_name=RESULTS_CSV,
                       mime="text/csv", key="dl_csv", icon=":material/download:")
    c2.download_button("Download overlays (ZIP)", lambda: logic.overlays_zip(items, threshold, calibrated),
                       file_name="overlays.zip", mime="application/zip", key="dl_zip", icon=":material/download:",
                       help="Full-resolution heatmap overlays with defect outlines, plus results.csv")


# ----- Review tab -----------------------------------------------------------------------
def _step_review(delta: int, count: int) -> None:
    pos = int(st.session_state.get("review_pos", 1)) + delta
    st.session_state["review_pos"] = min(max(pos, 1), max(count, 1))


def review_tab() -> None:
    folder = st.text_input("Output folder of `anomaly score`", key="review_folder",
                           placeholder="/path/to/scored-output (contains results.csv)")
    if not folder.strip():
        st.info("Enter the folder that `anomaly score` wrote (it contains results.csv). Failures are listed first.")
        return
    try:
        run = logic.load_scored_folder(folder)
    except logic.ReviewError as exc:
        st.error(str(exc), icon=":material/error:")
        return
    counts = run.counts()
    c = st.columns(4)
    c[0].metric("Images", len(run.table))
    c[1].metric("FAIL", counts["FAIL"])
    c[2].metric("Unreadable", counts["ERROR"])
    c[3].metric("PASS", counts["PASS"])
    st.caption(" · ".join(p for p in (run.describe(), "verdicts as recorded by that run (the sidebar threshold "
                                                     "applies to Inspect and Batch)") if p))
    only_fail = st.toggle("Failures and errors only", key="review_only_fail")
    table = run.table[run.table["verdict"] != "PASS"].reset_index(drop=True) if only_fail else run.table
    if table.empty:
        st.success("Nothing to show: no failures or unreadable images in this run.")
        return
    view = table[[c for c in TABLE_NAMES if c in table.columns]].rename(columns=TABLE_NAMES)
    view.insert(0, "#", range(1, len(view) + 1))
    st.dataframe(view.style.map(verdict_style, subset=["Verdict"]), hide_index=True, width="stretch",
                 height=min(320, 38 + 35 * len(view)), column_config=TABLE_COLUMNS, key="review_table", placeholder="—")

    n = len(table)
    if int(st.session_state.get("review_pos", 1)) > n:
        st.session_state["review_pos"] = 1
    c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    c1.button("◀ Previous", key="review_prev", on_click=_step_review, args=(-1, n), width="stretch")
    c2.button("Next ▶", key="review_next", on_click=_step_review, args=(1, n), width="stretch")
    pos = c3.number_input(f"Item # (of {n})", min_value=1, max_value=n, step=1, key="review_pos")
    row = table.iloc[int(pos) - 1]
    review_card(run, row)


def review_card(run: logic.ScoredRun, row: pd.Series) -> None:
    verdict = str(row["verdict"])
    verdict = verdict if verdict in ("PASS", "FAIL") else "ERROR"
    score = row["score"]
    threshold = next((run.run[k] for k in ("image_threshold", "threshold") if isinstance(run.run.get(k), (int, float))), None)
    with st.container(border=True):
        c_img, c_info = st.columns([1.2, 1.5], gap="medium")
        with c_info:
            text = card_head(str(row["path"]), verdict)
            if verdict != "ERROR" and score == score:
                if isinstance(threshold, (int, float)):
                    text += score_gauge(float(score), float(threshold), verdict)
                else:
                    text += f'<p class="score-line">Score <b>{float(score):.3f}</b></p>'
                text += (f'<p class="card-sub">{int(row["regions"] or 0)} defect region(s); largest '
                         f'{int(row["largest_region_area"] or 0)} px</p>')
            st.markdown(text, unsafe_allow_html=True)
            if verdict == "ERROR" or str(row.get("error") or "").strip():
                st.error(str(row.get("error") or "this image could not be scored"), icon=":material/error:")
        path, kind = logic.review_image(run, str(row["path"]))
        with c_img:
            if path is None:
                st.warning("Neither a saved overlay nor the original image was found for this entry.")
                return
            try:
                img = to_uint8(read_image(path))
            except ImageReadError as exc:
                st.warning(str(exc))
                return
            caption = "Saved overlay (heatmap + defect outlines)" if kind == "overlay" else \
                "Original image (no overlay saved; score with `--overlays` to keep them)"
            st.image(logic.downscale(img), caption=caption, width="stretch", alt=f"Review {row['path']}")


# ----- page -----------------------------------------------------------------------------
def main() -> None:
    st.set_page_config(page_title="Anomaly inspection", page_icon="🔍", layout="wide",
                       initial_sidebar_state="expanded", menu_items={"About": "Visual anomaly inspection dashboard"})
    st.html(CSS)
    inspector, model_key, model_name = sidebar_model()
    threshold, changed_slot, calibrated = None, None, None
    if inspector is not None:
        calibrated = float(inspector.image_threshold)
        threshold, changed_slot = sidebar_threshold(inspector, model_key)
        sidebar_model_details(inspector)

    st.title("Visual inspection")
    if inspector is not None:
        st.markdown(f'<p class="app-sub">Model <b>{html.escape(model_name)}</b> · threshold <b>{threshold:.2f}</b> (calibrated {calibrated:.2f})</p>', unsafe_allow_html=True)
    tab_inspect, tab_batch, tab_review = st.tabs(["Inspect", "Batch", "Review"])

    items: list[logic.Item] = []
    frame = logic.results_frame([], [], 1.0)
    decided: list = []
    with tab_inspect:
        if inspector is None:
            st.warning("No model is loaded. Choose or upload an .onnx model in the sidebar to inspect images.")
        else:
            files = collect_inputs()
            items = inspected_items(inspector, model_key, files)
            decided = logic.decide(items, threshold)
            frame = logic.results_frame(items, decided, calibrated)
            inspect_tab(items, decided, frame)
    if changed_slot is not None:
        n, to_fail, to_pass = logic.verdict_changes(frame)
        ok = int((frame["verdict"] != "ERROR").sum())
        if not ok:
            note = "Verdicts use this threshold as soon as you move it."
        elif n == 0:
            note = f"No verdict changed vs the calibrated threshold ({ok} image(s))."
        else:
            parts = [f"{to_fail} now FAIL" if to_fail else "", f"{to_pass} now PASS" if to_pass else ""]
            note = f"**{n} of {ok}** image(s) changed verdict vs the calibrated threshold ({', '.join(p for p in parts if p)})."
        if n:
            changed_slot.warning(note, icon=":material/swap_vert:")
        else:
            changed_slot.caption(note)
    with tab_batch:
        if inspector is None:
            st.info("Load a model to inspect a batch of images.")
        else:
            batch_tab(items, frame, threshold, calibrated)
    with tab_review:
        review_tab()


if __name__ == "__main__":
    main()
