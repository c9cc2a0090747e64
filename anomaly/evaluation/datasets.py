"""Finding and loading datasets: a plain folder of good parts, or an MVTec-style category.

MVTec layout: `train/good/*`, `test/good/*`, `test/<defect>/*`,
`ground_truth/<defect>/<name>_mask.png`, and optionally `validation/good/*` (as in MVTec
AD 2): good images kept apart from training, which then stop training and calibrate
thresholds instead of a random share of `train/good`. MVTec AD 2's public test split,
`test_public/{good,bad}` with masks in `test_public/ground_truth/bad/`, is read as the
test split when there is no `test/`. A plain folder is taken as all-good training
images. Unreadable files are reported (with their path and the reason) and skipped,
never silently dropped. No torch here: the runtime evaluates with it too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.inspection.imageio import ImageReadError, list_images, read_image, read_mask

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message names the path."""


@dataclass
class TestSample:
    path: Path
    defect: str  # "good" or the defect folder name
    mask_path: Path | None

    @property
    def is_defective(self) -> bool:
        return self.defect != "good"

    @property
    def mask_unknown(self) -> bool:
        """A defect image without a ground-truth mask: where its defect is, is not known."""
        return self.is_defective and self.mask_path is None


@dataclass
class Dataset:
    root: Path
    train: list[Path]
    test: list[TestSample] = field(default_factory=list)
    validation: list[Path] = field(default_factory=list)  # good images set apart for calibration

    @property
    def is_mvtec(self) -> bool:
        return bool(self.test)


def _require_dir(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"{path}: no such folder")
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder")


TEST_FOLDERS = ("test", "test_public")  # MVTec AD; MVTec AD 2's public test split


def labelled_folder(root: Path) -> Path | None:
    """The labelled test split of an MVTec-style folder, or None."""
    return next((root / name for name in TEST_FOLDERS if (root / name).is_dir()), None)


def _find_mask(root: Path, test_dir: Path, defect: str, image: Path) -> Path | None:
    """A defect image's ground truth: `<name>_mask.png` (MVTec), `<name>_mask<ext>` or
    `<name>.png`, in `ground_truth/<defect>/` beside the test split or inside it (MVTec AD 2)."""
    for folder in (root / "ground_truth" / defect, test_dir / "ground_truth" / defect):
        for name in (f"{image.stem}_mask.png", f"{image.stem}_mask{image.suffix}", f"{image.stem}.png"):
            if (folder / name).is_file():
                return folder / name
    return None


def _mvtec_test(root: Path) -> list[TestSample]:
    """Labelled test images of an MVTec-style folder (empty if there is no test split)."""
    test_dir = labelled_folder(root)
    if test_dir is None:
        return []
    samples = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and p.name != "ground_truth"):
        for img in list_images(defect_dir):
            mask = None if defect_dir.name == "good" else _find_mask(root, test_dir, defect_dir.name, img)
            samples.append(TestSample(img, defect_dir.name, mask))
    return samples


def find_dataset(root: str | Path) -> Dataset:
    """Discover training (and, for MVTec layout, test) images under root."""
    root = Path(root)
    _require_dir(root)
    train_dir = root / "train" / "good"
    validation: list[Path] = []
    if train_dir.is_dir():
        train, test = list_images(train_dir), _mvtec_test(root)
        validation_dir = root / "validation" / "good"
        if validation_dir.is_dir():
            validation = list_images(validation_dir)
            if not validation:
                raise DatasetError(
                    f"{validation_dir}: no images found (looked for .png .jpg .jpeg .bmp .tif .tiff); "
                    "remove the empty folder to hold out part of train/good instead"
                )
    else:
        train, test = list_images(root), []
    if not train:
        where = train_dir if train_dir.is_dir() else root
        raise DatasetError(f"{where}: no images found (looked for .png .jpg .jpeg .bmp .tif .tiff)")
    return Dataset(root, train, test, validation)


def find_test_set(root: str | Path) -> list[TestSample]:
    """The labelled test split of an MVTec-style folder, or a clear error."""
    root = Path(root)
    _require_dir(root)
    test_dir = labelled_folder(root)
    if test_dir is None:
        raise DatasetError(f"{root}: not an MVTec-style folder (no test/ or test_public/ subfolder)")
    samples = _mvtec_test(root)
    if not samples:
        raise DatasetError(f"{test_dir}: no test images found")
    return samples


def split_holdout(paths: list[Path], fraction: float, minimum: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Deterministic split into (fit, holdout); the holdout calibrates thresholds and
    stops training early, so it must never be trained on."""
    if len(paths) < minimum + 2:
        raise DatasetError(f"need at least {minimum + 2} good images to train and calibrate, found {len(paths)}")
    n_hold = max(minimum, int(round(len(paths) * fraction)))
    order = np.random.default_rng(seed).permutation(len(paths))
    hold = sorted(paths[i] for i in order[:n_hold])
    fit = sorted(paths[i] for i in order[n_hold:])
    return fit, hold


def sample_training(paths: list[Path], limit: int, seed: int) -> list[Path]:
    """A seeded random `limit` of `paths` (in their order), or all of them when there are
    not more (or limit is 0): training time and memory then stop growing with the count."""
    if limit <= 0 or len(paths) <= limit:
        return list(paths)
    keep = np.random.default_rng(seed).choice(len(paths), size=limit, replace=False)
    return [paths[i] for i in sorted(keep)]


def relative_name(path: Path, root: Path) -> str:
    """How a model names one of its training images: the path inside its folder (no path
    of the training machine), or the file name for an image from elsewhere."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def iter_images(paths: Iterable[Path], warn=None) -> Iterator[tuple[Path, np.ndarray]]:
    """(path, image) for each readable image, one at a time, so a caller that shrinks
    them to a working size never holds a folder of large photos in memory at full
    resolution; unreadable ones are reported through `warn` (default: a logging warning) and skipped."""
    warn = warn or log.warning
    for p in paths:
        try:
            image = read_image(p)
        except ImageReadError as exc:
            warn(f"skipped {exc}")
            continue
        yield p, image


def load_images(paths: list[Path], warn=None) -> tuple[list[np.ndarray], list[Path]]:
    """Read images (see `iter_images`). Returns the images and the paths that loaded."""
    pairs = list(iter_images(paths, warn))
    return [image for _, image in pairs], [p for p, _ in pairs]


def load_mask(sample: TestSample, shape: tuple[int, int]) -> np.ndarray:
    """Ground truth for a test sample: all False for good parts (or a missing mask)."""
    if sample.mask_path is None:
        return np.zeros(shape, dtype=bool)
    return read_mask(sample.mask_path, shape)
