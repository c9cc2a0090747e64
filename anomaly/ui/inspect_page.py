"""The dashboard's Inspect tab: upload images (or a folder, or the bundled samples), inspect
what is new, and show one card per image with its verdict, heatmap, defect regions and
the inspector's decision.

Test hook: `st.session_state["extra_inputs"]` may hold a list of (name, bytes) pairs;
they are inspected like uploads (the "Load sample images" button fills it too).
"""

from __future__ import annotations

import html
from pathlib import PurePosixPath

import pandas as pd
import streamlit as st

from anomaly.inspection.inspector import Inspection, Inspector
from anomaly.ui import feedback, logic, tables, widgets
from anomaly.ui.uploads import sample_files, unique_uploads

PAGE_SIZE = 8  # image cards per page in the Inspect tab
EXTRA_INPUTS = "extra_inputs"


def _load_samples() -> None:
    st.session_state[EXTRA_INPUTS] = sample_files()


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
    uploads = unique_uploads(files)
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


def upload_decider(
    store: feedback.DecisionStore, item: logic.Item, insp: Inspection, data: bytes, ctx: tables.ExportContext
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
    ctx: tables.ExportContext,
) -> None:
    if not items:
        st.info("Drop one or more images above, or press **Load sample images** to try the bundled examples.")
        return
    widgets.summary_metrics(frame)
    view, opacity = widgets.view_controls("inspect")
    order = list(range(len(items)))
    pages = (len(items) + PAGE_SIZE - 1) // PAGE_SIZE
    if len(items) > PAGE_SIZE:
        fails_first = st.toggle("Failures first", value=False, key="inspect_fails_first")
        if fails_first:
            rank = frame["verdict"].map(tables.VERDICT_ORDER).to_numpy()
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
