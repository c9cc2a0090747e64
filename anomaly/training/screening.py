"""Screening a "good" folder for parts that are not good: the suspects.

A real folder of good parts holds a few defective ones. A model with a patch memory
remembers their defect patches, so the same defect on a new part later finds a close
match and passes; and their high scores among the calibration images lift the
threshold. Each training image is therefore scored by the model without the memory
patches it contributed (`Detector.out_of_fold_scores`): a leave-one-image-out score,
what the image would score as a new part. An image whose score stands out from the
others' (a robust outlier rule on the log scores, so no fixed share is dropped and a
clean folder loses next to nothing) is left out of the memory and of the threshold's
good scores, and listed for the engineer with its heatmap.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from anomaly.evaluation.datasets import find_dataset
from anomaly.inspection.imageio import ImageReadError, read_image, to_uint8
from anomaly.inspection.layout import Layout
from anomaly.inspection.overlays import overlay
from anomaly.training.networks import PatchMemory

if TYPE_CHECKING:
    from anomaly.training.detector import Detector

LISTED_Z = 2.0  # listed for a look (not left out) from this robust z-score on
MAX_LISTED = 20  # a short list: the most suspect first
SUSPECTS_REPORT = "suspects.html"  # written next to the model by `anomaly train`


@dataclass
class Suspect:
    path: str  # relative to the training folder
    score: float  # leave-one-out (training images) or plain (held-out images) score; 1.0 = shipped threshold
    z: float  # robust z-score of its log score among all good images
    left_out: bool  # left out of the patch memory and the threshold's good scores


def log_yardstick(scores: np.ndarray) -> tuple[float, float]:
    """Centre and spread of the log scores: median, and the median absolute deviation
    scaled to a normal's standard deviation (the mean absolute deviation when over half
    the scores are equal). Spread 0 when the scores say nothing."""
    logs = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-12))
    if logs.size < 3:
        return 0.0, 0.0
    centre = float(np.median(logs))
    spread = 1.4826 * float(np.median(np.abs(logs - centre)))
    if spread <= 0:
        spread = 1.2533 * float(np.mean(np.abs(logs - centre)))
    return centre, spread


def robust_z(scores: np.ndarray) -> np.ndarray:
    """Modified z-scores of the log scores (Iglewicz and Hoaglin): distance from the
    median in units of the median absolute deviation (`log_yardstick`). Logs, because
    good scores are skewed (a log-normal is what the threshold rule fits too); median
    and MAD, because the outliers must not move the yardstick they are measured by."""
    logs = np.log(np.maximum(np.asarray(scores, dtype=np.float64), 1e-12))
    centre, spread = log_yardstick(scores)
    return (logs - centre) / spread if spread > 0 else np.zeros_like(logs)


def labelled_cut(good_scores: np.ndarray, defect_scores: np.ndarray, suspect_z: float) -> float:
    """The left-out z-score, sharpened by labelled defects (`anomaly train --defects`).

    On the good images' yardstick the labelled defects' log scores have a centre and a
    spread of their own (median and MAD). A training image is left out from where its
    score is as likely among the labelled defects as among the good images (two normals:
    the good ones N(0, 1) by construction), kept between LISTED_Z and `suspect_z`: labels
    can only lower the cut, and never into the bulk of the good images. Defects the
    model scores no higher than LISTED_Z cannot sharpen anything: the cut stays."""
    centre, spread = log_yardstick(good_scores)
    if spread <= 0 or len(defect_scores) == 0:
        return suspect_z
    dz = (np.log(np.maximum(np.asarray(defect_scores, dtype=np.float64), 1e-12)) - centre) / spread
    mu = float(np.median(dz))
    if mu <= LISTED_Z:
        return suspect_z
    # a few labels that happen to agree must not make a needle-thin density
    sd = max(1.4826 * float(np.median(np.abs(dz - mu))) if dz.size >= 3 else 1.0, 0.25)
    # equal log densities, -x^2/2 = -(x - mu)^2 / (2 sd^2) - ln sd: the root between 0 and mu
    a, b, c = 0.5 / sd**2 - 0.5, -mu / sd**2, mu**2 / (2 * sd**2) + np.log(sd)
    roots = np.roots([a, b, c]) if abs(a) > 1e-12 else np.array([-c / b])
    between = [float(r.real) for r in roots if abs(r.imag) < 1e-9 and 0 <= r.real <= mu]
    crossing = min(between) if between else mu / 2
    return float(min(suspect_z, max(LISTED_Z, crossing)))


def find_suspects(names: list[str], scores: np.ndarray, left_out_z: float) -> list[Suspect]:
    """The images worth a look, most suspect first: robust z above LISTED_Z (at most
    MAX_LISTED), those above `left_out_z` marked as left out. `left_out_z` <= 0 lists
    them without leaving any out."""
    z = robust_z(scores)
    order = np.argsort(-z, kind="stable")
    return [
        Suspect(names[i], float(scores[i]), round(float(z[i]), 2), bool(0 < left_out_z < z[i]))
        for i in order[:MAX_LISTED]
        if z[i] > LISTED_Z
    ]


def memory_owner(layouts: list[Layout], sources: np.ndarray) -> np.ndarray:
    """The training image each memory row came from, given the training view of each
    row (`memory_sources`) and the images' layouts (their views are consecutive)."""
    starts = np.cumsum([0] + [layout.views for layout in layouts])
    return np.searchsorted(starts, sources, side="right") - 1


@torch.no_grad()
def forget_images(memory: PatchMemory, owner: np.ndarray, images: set[int]) -> int:
    """Take the patches of the given training images out of the memory: each of their
    rows becomes a copy of a kept row (a repeated patch changes no nearest-neighbour
    distance; the memory keeps its size, which the exported graph is built for).
    Returns the number of rows replaced."""
    gone = np.isin(owner, sorted(images))
    kept = np.flatnonzero(~gone)
    if not gone.any() or kept.size == 0:
        return 0
    rows = torch.from_numpy(np.flatnonzero(gone))
    donors = torch.from_numpy(kept[np.arange(rows.numel()) % kept.size])
    memory.memory[rows] = memory.memory[donors]
    memory.memory_sqnorm[rows] = memory.memory_sqnorm[donors]
    return int(rows.numel())


def to_summary(suspects: list[Suspect], threshold_factor: float) -> list[dict]:
    """The list as stored in the model's summary, scores on the shipped scale."""
    return [{**asdict(s), "score": round(s.score / threshold_factor, 4)} for s in suspects]


def suspects_report(det: Detector, data: str | Path, out: Path) -> Path:
    """A short HTML page: every suspect of a trained detector with its score, the image
    and its heatmap, so the engineer can look and move the defective ones out of the
    folder. The images are read again from the training folder."""
    from anomaly.ui.report import STYLE, jpeg_data_uri  # the dashboard's report look (no Streamlit)

    root = find_dataset(data).root
    esc = html.escape
    parts = []
    for entry in det.summary.get("suspects") or []:
        figures = ""
        try:
            image = read_image(root / entry["path"])
        except (ImageReadError, OSError) as exc:
            figures = f"<p>not shown: {esc(str(exc))}</p>"
        else:
            heatmap = det.score([image])[0][0]
            for caption, picture in (
                ("Image", to_uint8(image)),
                ("Heatmap", overlay(image, heatmap, heatmap > det.pixel_threshold, det.pixel_threshold)),
            ):
                figures += (
                    f'<figure><img src="{jpeg_data_uri(picture)}" alt="{esc(caption)}">'
                    f"<figcaption>{esc(caption)}</figcaption></figure>"
                )
        action = "left out of the model" if entry["left_out"] else "kept (worth a look)"
        parts.append(
            f'<section class="part"><h3>{esc(entry["path"])} · score {entry["score"]:.3f} · z {entry["z"]:.1f} · '
            f'{action}</h3><div class="panels">{figures}</div></section>'
        )
    body = (
        "<h1>Training images that do not fit the rest</h1>"
        f"<p>Model trained on {esc(str(det.summary.get('data', '')))}. Each training image was scored by the "
        "model without its own memory patches, as a new part would be (score 1.0 = the shipped threshold). "
        "These stand out from the other good images. Look at them: move defective parts out of the good "
        "folder and train again.</p>" + ("".join(parts) or "<p>None: every training image fits the rest.</p>")
    )
    out.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Suspect training images</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )
    return out
