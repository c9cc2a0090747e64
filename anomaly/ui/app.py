"""Inspection dashboard: `streamlit run ui/app.py` (or `anomaly ui`). The page that wires the parts.

Sidebar (sidebar.py): the model (a file from models/ or an upload) with its metadata,
the decision threshold and the operator's name. Main area: Inspect (inspect_page.py:
upload images or a folder, see verdicts, heatmaps and defect regions, confirm or overrule
them), Batch (batch_page.py: table, histogram, downloads, report) and Review (a folder
written by `anomaly score`; review_page.py).

The model runs once per image, at full resolution; moving the threshold re-decides
from the stored heatmaps. Only the torch-free runtime is used.
"""

from __future__ import annotations

import html

import streamlit as st

from anomaly.ui import batch_page, feedback, inspect_page, logic, sidebar, tables, uploads, widgets
from anomaly.ui.review_page import review_tab


def main() -> None:
    st.set_page_config(
        page_title="Anomaly inspection",
        page_icon="🔍",
        layout="wide",
        initial_sidebar_state="expanded",
        menu_items={"About": "Visual anomaly inspection dashboard"},
    )
    st.html(widgets.CSS)
    inspector, model_key, model_name, model_error = sidebar.sidebar_model()
    threshold, changed_slot, calibrated = 1.0, None, 1.0
    if inspector is not None:
        calibrated = float(inspector.image_threshold)
        threshold, changed_slot = sidebar.sidebar_threshold(inspector, model_key)
        sidebar.sidebar_model_details(inspector)
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
    frame = tables.results_frame([], [], 1.0)
    decided: list = []
    ctx = tables.ExportContext(threshold, model_name, inspector.info.digest if inspector else "", operator)
    store = feedback.upload_store(ctx.model_digest)
    with tab_inspect:
        if inspector is None:
            st.warning("No model is loaded. Choose or upload an .onnx model in the sidebar to inspect images.")
        else:
            files = inspect_page.collect_inputs()
            items = inspect_page.inspected_items(inspector, model_key, files)
            decided = logic.decide(items, threshold)
            frame = tables.results_frame(items, decided, calibrated)
            inspect_page.inspect_tab(items, decided, frame, {uploads.digest(d): d for _, d in files}, store, ctx)
    if changed_slot is not None:
        sidebar.verdict_change_note(changed_slot, frame)
    with tab_batch:
        if inspector is None:
            st.info("Load a model to inspect a batch of images.")
        else:
            batch_page.batch_tab(items, frame, ctx, calibrated, store)
    with tab_review:
        review_tab(operator)


if __name__ == "__main__":
    main()
