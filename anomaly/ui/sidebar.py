"""The dashboard's sidebar: the model (a file from models/ or an upload) with its metadata,
the decision threshold, and the note on how many verdicts the threshold changed.

Models are loaded once per file or upload and shared across reruns and users
(`st.cache_resource`). Only the torch-free runtime is used.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from anomaly.errors import ModelFileError
from anomaly.inspection.inspector import Inspector
from anomaly.ui import model_info, tables, uploads, widgets


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
    models = model_info.list_models()
    choice = None
    if models:
        choice = sb.selectbox("Model file (models/)", [p.name for p in models], index=0, key="model_choice")
    else:
        sb.warning(f"No .onnx models in {model_info.MODELS_DIR}. Export one with `anomaly export` or upload one below.")
    with sb.expander("Upload another model", expanded=False):
        upload = st.file_uploader("ONNX model exported with `anomaly export`", type=["onnx"], key="model_upload")
    if upload is not None:
        data = upload.getvalue()
        sha1 = uploads.digest(data)
        try:
            inspector = load_model_upload(sha1, data, upload.name)
        except ModelFileError as exc:
            sb.error(f"Cannot use the uploaded model. {exc}")
            return None, "", upload.name, f"The uploaded model **{upload.name}** cannot be used: {exc}"
        sb.caption(f"Using uploaded model **{upload.name}**.")
        return inspector, f"upload:{sha1}", upload.name, ""
    if choice is not None:
        path = model_info.MODELS_DIR / choice
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
            widgets.facts_table([*model_info.model_facts(inspector), ("Digest", inspector.info.digest[:16] or "—")]),
            unsafe_allow_html=True,
        )


def set_threshold(value: float) -> None:
    st.session_state["threshold"] = value


def sidebar_threshold(inspector: Inspector, model_key: str) -> tuple[float, DeltaGenerator]:
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
        on_click=set_threshold,
        args=(calibrated,),
        disabled=abs(float(threshold) - calibrated) < 1e-9,
        icon=":material/restart_alt:",
    )
    row.caption(f"Calibrated: **{calibrated:.2f}**")
    return float(threshold), sb.empty()


def verdict_change_note(slot: DeltaGenerator, frame: pd.DataFrame) -> None:
    """Fill the slot under the threshold: how many verdicts differ from those at the calibrated threshold."""
    n, to_fail, to_pass = tables.verdict_changes(frame)
    ok = int((frame["verdict"] != "ERROR").sum())
    if not ok:
        note = "Verdicts use this threshold as soon as you move it."
    elif n == 0:
        note = f"No verdict changed vs the calibrated threshold ({ok} image(s))."
    else:
        parts = [f"{to_fail} now FAIL" if to_fail else "", f"{to_pass} now PASS" if to_pass else ""]
        note = f"**{n} of {ok}** image(s) changed verdict vs the calibrated threshold ({', '.join(p for p in parts if p)})."
    if n:
        slot.warning(note, icon=":material/swap_vert:")
    else:
        slot.caption(note)
