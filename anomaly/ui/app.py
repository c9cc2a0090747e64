"""Inspection dashboard: `streamlit run ui/app.py` (or `anomaly ui`).

Sidebar: the model (a file from models/ or an upload) with its metadata, the decision
threshold and the operator's name. Main area: Inspect (upload images or a folder, see
verdicts, heatmaps and defect regions, confirm or overrule them), Batch (table,
histogram, downloads, report) and Review (a folder written by `anomaly score`; see
review_page.py).

The model runs once per image, at full resolution; moving the threshold re-decides
from the stored heatmaps. Only the torch-free runtime is used.

Test hook: `st.session_state["extra_inputs"]` may hold a list of (name, bytes) pairs;
they are inspected like uploads (the "Load sample images" button fills it too).
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path, PurePosixPath

import altair as alt
import pandas as pd
import streamlit as st

from anomaly.errors import ModelFileError
from anomaly.inspection.inspector import Inspection, Inspector
from anomaly.scoring.schema import RESULTS_CSV
from anomaly.ui import feedback, logic, report, widgets
from anomaly.ui.review_page import review_tab

PAGE_SIZE = 8  # image cards per page in the Inspect tab
EXTRA_INPUTS = "extra_inputs"


# ----- cached resources (shared across reruns and users) ---------------------------------
@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def load_model_file(path: str, mtime_ns: int) -> Inspector:
    """One onnxruntime session per model file (a changed file gets a new session)."""
    return Inspector(path)


@st.cache_resource(show_spinner="Loading uploaded model…", max_entries=4)
def load_model_upload(sha1: str, _data: bytes, name: str) -> Inspector:
    """One session per uploaded model, keyed by the hash of its bytes. The upload passes
    through a private temporary folder that is removed once loaded or refused: the
    session holds the model in memory, and a refused upload leaves nothing behind."""
    with tempfile.TemporaryDirectory(prefix="anomaly-ui-model-") as folder:
        path = Path(folder) / f"{sha1}.onnx"
        path.write_bytes(_data)
        try:
            return Inspector(path)
        except ModelFileError as exc:
            raise ModelFileError(str(exc).replace(str(path), name)) from None


# ----- sidebar: model, threshold, operator -----------------------------------------------
def sidebar_model() -> tuple[Inspector | None, str, str, str]:
    """Select or upload a model; returns (inspector or None, cache key, file name, error).
    An uploaded model that cannot be used is an error, not a silent fall-back: verdicts
    of the previous model must not stay on the page as if they were the new one's."""
    sb = st.sidebar
    sb.header("Model")
    models = logic.list_models()
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
            inspector = load_model_upload(sha1, data, upload.name)
        except ModelFileError as exc:
            sb.error(f"Cannot use the uploaded model. {exc}")
            return None, "", upload.name, f"The uploaded model **{upload.name}** cannot be used: {exc}"
        sb.caption(f"Using uploaded model **{upload.name}**.")
        return inspector, f"upload:{sha1}", upload.name, ""
    if choice is not None:
        path = logic.MODELS_DIR / choice
        try:
            stat = path.stat()
            return load_model_file(str(path), stat.st_mtime_ns), f"file:{path}:{stat.st_mtime_ns}", choice, ""
        except (ModelFileError, OSError) as exc:
            sb.error(f"Cannot load {choice}. {exc}")
            return None, "", choice, f"The model **{choice}** cannot be loaded: {exc}"
    return None, "", "", ""


def sidebar_model_details(inspector: Inspector) -> None:
    with st.sidebar.expander("Model details", expanded=True):
        st.markdown(
            widgets.facts_table([*logic.model_facts(inspector), ("Digest", inspector.info.digest[:16] or "—")]),
            unsafe_allow_html=True,
        )


def _set_threshold(value: float) -> None:
    st.session_state["threshold"] = value


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
    threshold = sb.slider(
        "Image threshold (score at or above = FAIL)",
        min_value=0.0,
        max_value=top,
        step=0.01,
        format="%.2f",
        key="threshold",
        help="Scores are calibrated so that 1.00 is the threshold chosen when the model was trained.",
    )
    row = sb.container(horizontal=True, vertical_alignment="center")
    row.button(
        "Reset to calibrated",
        key="reset_threshold",
        on_click=_set_threshold,
        args=(calibrated,),
        disabled=abs(float(threshold) - calibrated) < 1e-9,
        icon=":material/restart_alt:",
    )
    row.caption(f"Calibrated: **{calibrated:.2f}**")
    return float(threshold), sb.empty()


# ----- Inspect tab ----------------------------------------------------------------------
def _load_samples() -> None:
    st.session_state[EXTRA_INPUTS] = logic.sample_files()


def _clear_samples() -> None:
    st.session_state[EXTRA_INPUTS] = []


def collect_inputs() -> list[tuple[str, bytes]]:
    c1, c2 = st.columns([3, 2])
    uploads = c1.file_uploader(
        "Drop images here or browse (PNG, JPEG, BMP, TIFF; one or many)",
        accept_multiple_files=True,
        key="image_uploader",
        help="Images of any size are inspected at full resolution.",
    )
    folder = c2.file_uploader(
        "…or a whole folder (keeps sub-folder names, e.g. crack/001.png)",
        accept_multiple_files="directory",
        type=["png", "jpg", "jpeg", "bmp", "tif", "tiff"],
        key="folder_uploader",
    )
    row = st.container(horizontal=True)
    row.button(
        "Load sample images",
        key="load_samples",
        on_click=_load_samples,
        type="primary",
        help="A few good and defective washers from sample_images/washer/test",
    )
    row.button(
        "Clear samples", key="clear_samples", on_click=_clear_samples, disabled=not st.session_state.get(EXTRA_INPUTS)
    )
    files = [(u.name, u.getvalue()) for u in [*(uploads or []), *(folder or [])]]
    files += [(str(n), bytes(b)) for n, b in st.session_state.get(EXTRA_INPUTS) or []]
    return files


def inspected_items(inspector: Inspector, model_key: str, files: list[tuple[str, bytes]]) -> list[logic.Item]:
    """Inspect what is new (per session cache keyed by model, content and name); identical
    files are inspected and listed once, under the first name."""
    cache: dict = st.session_state.setdefault("_inspected", {})
    uploads = logic.unique_uploads(files)
    keys = [(model_key, u.digest, u.name) for u in uploads]
    todo = [(k, u) for k, u in zip(keys, uploads) if k not in cache]
    if todo:
        bar = st.progress(0.0, text=f"Inspecting {len(todo)} image(s)…")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"Inspecting… {done}/{total}")

        new = logic.inspect_files(inspector, [(u.name, u.data) for _, u in todo], progress=progress)
        bar.empty()
        for (k, _), item in zip(todo, new):
            cache[k] = item
    for k in [k for k in cache if k not in set(keys)]:  # forget removed uploads (and their pictures)
        del cache[k]
    for k, u in zip(keys, uploads):
        cache[k].also = u.also
    return [cache[k] for k in keys]


def error_card(item: logic.Item) -> None:
    with st.container(border=True):
        st.markdown(
            widgets.card_head(item.name, "ERROR", "This file was not inspected; the other images were."),
            unsafe_allow_html=True,
        )
        st.error(f"Could not inspect this file. {item.error}", icon=":material/error:")


def image_card(item: logic.Item, insp: Inspection, view: str, opacity: float, decision: dict | None, decide) -> None:
    """Original beside the chosen view, verdict + score + regions, and the inspector's decision."""
    w, h = item.size
    sub = f"{w} × {h} px"
    assert item.display_image is not None
    if item.downscaled:
        dw, dh = item.display_image.shape[1], item.display_image.shape[0]
        sub += f" · shown at {dw} × {dh}, inspected at full size"
    if item.also:
        sub += " · also uploaded as " + ", ".join(html.escape(a) for a in item.also)
    if item.transparent:
        sub += " · transparent pixels shown on black, as the model sees them"
    with st.container(border=True, key=f"card_{item.digest[:12]}"):
        c_img, c_heat, c_info = st.columns([1, 1, 1.2], gap="medium")
        c_img.image(item.display_image, caption="Image", width="stretch", alt=f"Image {item.name}")
        c_heat.image(
            logic.item_view(item, insp, view, opacity),
            caption=widgets_caption(view),
            width="stretch",
            alt=f"Heatmap {item.name}",
        )
        with c_info:
            st.markdown(
                widgets.card_head(item.name, insp.verdict, sub)
                + widgets.score_gauge(insp.score, insp.image_threshold, insp.verdict),
                unsafe_allow_html=True,
            )
            rows = logic.region_rows(item.regions(insp), item.size)
            if rows:
                st.markdown(
                    f"**Defect regions ({len(rows)})**, outlined (original pixels)" + widgets.regions_html(rows),
                    unsafe_allow_html=True,
                )
            else:
                st.caption("No defect regions at this threshold.")
            widgets.decision_controls(f"fb_{item.digest[:12]}", insp.verdict, decision, decide)


def widgets_caption(view: str) -> str:
    return {"heatmap": "Heatmap + defect outlines", "outline": "Defect outlines", "original": "Image"}[view]


def summary_metrics(frame: pd.DataFrame) -> None:
    counts = frame["verdict"].value_counts()
    c = st.columns(4)
    c[0].metric("Images", len(frame))
    c[1].metric("PASS", int(counts.get("PASS", 0)))
    c[2].metric("FAIL", int(counts.get("FAIL", 0)))
    c[3].metric("Unreadable", int(counts.get("ERROR", 0)))


def upload_decider(
    store: feedback.DecisionStore, item: logic.Item, insp: Inspection, data: bytes, ctx: logic.ExportContext
):
    def decide(decision: feedback.Decision | None, note: str) -> None:
        store.record(
            item.digest,
            item.name,
            decision,
            verdict=insp.verdict,
            score=insp.score,
            threshold=ctx.threshold,
            model=ctx.model,
            model_digest=ctx.model_digest,
            note=note,
            operator=ctx.operator,
            image=data,
            suffix=PurePosixPath(item.name).suffix or ".png",
        )

    return decide


def inspect_tab(
    items: list[logic.Item],
    decided,
    frame: pd.DataFrame,
    files: dict[str, bytes],
    store: feedback.DecisionStore,
    ctx: logic.ExportContext,
) -> None:
    if not items:
        st.info("Drop one or more images above, or press **Load sample images** to try the bundled examples.")
        return
    summary_metrics(frame)
    view, opacity = widgets.view_controls("inspect")
    order = list(range(len(items)))
    pages = (len(items) + PAGE_SIZE - 1) // PAGE_SIZE
    if len(items) > PAGE_SIZE:
        fails_first = st.toggle("Failures first", value=False, key="inspect_fails_first")
        if fails_first:
            rank = frame["verdict"].map(logic.VERDICT_ORDER).to_numpy()
            score = frame["score"].fillna(0.0).to_numpy()
            order.sort(key=lambda i: (rank[i], -score[i]))
        page = int(
            st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, step=1, key="inspect_page")
        )
        order = order[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    decisions = store.load()
    for i in order:
        it = items[i]
        if decided[i] is None:
            error_card(it)
        else:
            image_card(
                it,
                decided[i],
                view,
                opacity,
                decisions.get(it.digest),
                upload_decider(store, it, decided[i], files.get(it.digest, b""), ctx),
            )
    if len(items) > PAGE_SIZE:
        st.caption(f"Page {page} of {pages}: change the page above.")


# ----- Batch tab ------------------------------------------------------------------------
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
                scale=alt.Scale(domain=["PASS", "FAIL"], range=[logic.PASS_COLOR, logic.FAIL_COLOR]),
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
    items: list[logic.Item], frame: pd.DataFrame, ctx: logic.ExportContext, decisions: dict[str, dict]
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
    ctx: logic.ExportContext,
    calibrated: float,
    store: feedback.DecisionStore,
) -> None:
    if not items:
        st.info("No images yet. Upload images in the **Inspect** tab; all of them are listed here.")
        return
    summary_metrics(frame)
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
        logic.results_csv(frame, ctx),
        file_name=RESULTS_CSV,
        mime="text/csv",
        key="dl_csv",
        icon=":material/download:",
        help="With the threshold, model, model digest, date and operator on every row",
    )
    c2.download_button(
        "Download overlays (ZIP)",
        lambda: logic.overlays_zip(items, ctx, calibrated),
        file_name="overlays.zip",
        mime="application/zip",
        key="dl_zip",
        icon=":material/download:",
        help="Heatmap overlays with defect outlines, plus results.csv",
    )
    c3.download_button(
        "Download report (HTML)",
        lambda: batch_report(items, frame, ctx, decisions),
        file_name="inspection-report.html",
        mime="text/html",
        key="dl_report",
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
            on_click=_set_threshold,
            args=(round(new - 0.005, 2),),
            disabled=abs(new - ctx.threshold) < 1e-9,
        )


# ----- page -----------------------------------------------------------------------------
def main() -> None:
    st.set_page_config(
        page_title="Anomaly inspection",
        page_icon="🔍",
        layout="wide",
        initial_sidebar_state="expanded",
        menu_items={"About": "Visual anomaly inspection dashboard"},
    )
    st.html(widgets.CSS)
    inspector, model_key, model_name, model_error = sidebar_model()
    threshold, changed_slot, calibrated = 1.0, None, 1.0
    if inspector is not None:
        calibrated = float(inspector.image_threshold)
        threshold, changed_slot = sidebar_threshold(inspector, model_key)
        sidebar_model_details(inspector)
    operator = st.sidebar.text_input("Operator", key="operator", placeholder="your name (goes into exports)")

    st.title("Visual inspection")
    if inspector is not None:
        st.markdown(
            f'<p class="app-sub">Model <b>{html.escape(model_name)}</b> · threshold <b>{threshold:.2f}</b> '
            f"(calibrated {calibrated:.2f})</p>",
            unsafe_allow_html=True,
        )
    elif model_error:
        st.session_state.pop("_inspected", None)  # verdicts of another model must not come back
        st.error(model_error + " No verdicts are shown until a usable model is loaded.", icon=":material/error:")
    tab_inspect, tab_batch, tab_review = st.tabs(["Inspect", "Batch", "Review"])

    items: list[logic.Item] = []
    frame = logic.results_frame([], [], 1.0)
    decided: list = []
    ctx = logic.ExportContext(threshold, model_name, inspector.info.digest if inspector else "", operator)
    store = feedback.upload_store(ctx.model_digest)
    with tab_inspect:
        if inspector is None:
            st.warning("No model is loaded. Choose or upload an .onnx model in the sidebar to inspect images.")
        else:
            files = collect_inputs()
            items = inspected_items(inspector, model_key, files)
            decided = logic.decide(items, threshold)
            frame = logic.results_frame(items, decided, calibrated)
            inspect_tab(items, decided, frame, {logic.digest(d): d for _, d in files}, store, ctx)
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
            batch_tab(items, frame, ctx, calibrated, store)
    with tab_review:
        review_tab(operator)


if __name__ == "__main__":
    main()
