"""anomaly: learn what good parts look like, find defects, run on a plain CPU.

Subpackages, each with one responsibility:

- `anomaly.inspection`: images in, verdicts out with an exported ONNX file (numpy, OpenCV,
  onnxruntime only); what a line PC runs.
- `anomaly.scoring`: folders of images to results files, resumable (local and Ray engines).
- `anomaly.evaluation`: datasets, metrics and the evaluation report.
- `anomaly.synthetic`: painted defects and the demo dataset.
- `anomaly.training`: networks, the fit loop, calibration and export (needs torch).
- `anomaly.ui`: the Streamlit dashboard.
- `anomaly.contract`: the ONNX file's contract, shared by export and inspection.

Importing `anomaly` loads nothing else and changes nothing in the process.
"""

__version__ = "0.2.0"
