"""Synthetic defects painted onto good images.

Used for the demo dataset (`anomaly.synthetic.demo`) and for training models that learn
from synthetic defects. Every painter takes an internal-form image (float32
(H, W, 3) RGB in [0, 1]) and a `numpy.random.Generator` and returns
`(defective_image, mask)`.

The mask is exact by construction: a painter first computes what the pixels of
a small window would become, then keeps only the pixels whose change is visible
(at least `VISIBLE_DELTA` in some channel) and restores all others bit for bit.
So the mask is True exactly where the returned image differs from the input,
which is what a pixel-level metric needs: a training target that marks a pixel
the model could not possibly see as changed only teaches it noise.

`scale` is the defect's characteristic size (length of a line, diameter of a
blob) as a fraction of the image's shorter side, e.g. 0.005 (a few pixels) to
0.3 (large). A draw that turns out invisible (say, a dark crack on a black
area) is retried somewhere else and a little larger, so the mask is never
empty.

numpy and OpenCV only (no torch): the same code runs in data loaders, tools
and tests. Work is done in a window around the defect, so the cost does not
grow with the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anomaly.synthetic.canvas import VISIBLE_DELTA, Defect, as_image, is_gray, perlin_noise, smooth_noise
from anomaly.synthetic.marks import crack, cut, dent, pits, scratch, stain
from anomaly.synthetic.material import cut_paste, missing_material, perlin_foreign_texture

__all__ = [
    "DEFECTS",
    "DEFECT_KINDS",
    "VISIBLE_DELTA",
    "DefectSettings",
    "crack",
    "cut",
    "cut_paste",
    "dent",
    "is_gray",
    "missing_material",
    "perlin_foreign_texture",
    "perlin_noise",
    "pits",
    "random_defect",
    "scratch",
    "smooth_noise",
    "stain",
]

# --------------------------------------------------------------------------- choosing

Painter = Callable[..., Defect]

DEFECTS: dict[str, Painter] = {
    "scratch": scratch,
    "crack": crack,
    "stain": stain,
    "dent": dent,
    "pits": pits,
    "cut": cut,
    "missing_material": missing_material,
    "perlin_foreign_texture": perlin_foreign_texture,
    "cut_paste": cut_paste,
}
DEFECT_KINDS: tuple[str, ...] = tuple(DEFECTS)


def _check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    """Known kinds as a tuple (all when None); unknown names raise, listing the choices."""
    names = DEFECT_KINDS if kinds is None else tuple(kinds)
    if not names:
        raise ValueError("kinds is empty")
    unknown = [k for k in names if k not in DEFECTS]
    if unknown:
        raise ValueError(f"unknown defect kind(s) {unknown}; choose from {list(DEFECT_KINDS)}")
    return names


def _check_scale_range(scale_range: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in scale_range)
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= 1, got {scale_range}")
    return lo, hi


def random_defect(
    image: np.ndarray,
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    scale_range: tuple[float, float] = (0.01, 0.2),
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Paint one defect of a random kind and log-uniform random scale.

    With `foreground` (bool (H, W), the part) the defect is centred on the
    part and changes only part pixels, so it never lands on the background
    where an inspector would not call it a defect.
    """
    names = _check_kinds(kinds)
    lo, hi = _check_scale_range(scale_range)
    kind = names[int(rng.integers(len(names)))]
    scale = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    out, mask = DEFECTS[kind](image, rng, scale, region=foreground)
    return out, mask, kind


@dataclass(frozen=True)
class DefectSettings:
    """How synthetic defects were generated, stored with a model as JSON.

    `probability` is the chance that a training sample gets a defect at all;
    the rest stay good (their mask is empty).
    """

    kinds: tuple[str, ...] = DEFECT_KINDS
    scale_range: tuple[float, float] = (0.01, 0.2)
    probability: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", _check_kinds(self.kinds))
        object.__setattr__(self, "scale_range", _check_scale_range(self.scale_range))
        p = float(self.probability)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        object.__setattr__(self, "probability", p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists, not tuples)."""
        return {"kinds": list(self.kinds), "scale_range": list(self.scale_range), "probability": self.probability}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DefectSettings:
        """Inverse of `to_dict`; missing keys take defaults, unknown keys are an error."""
        extra = set(data) - {"kinds", "scale_range", "probability"}
        if extra:
            raise ValueError(f"unknown DefectSettings field(s): {sorted(extra)}")
        defaults = cls()
        return cls(
            kinds=tuple(data.get("kinds", defaults.kinds)),
            scale_range=_check_scale_range(data.get("scale_range", defaults.scale_range)),
            probability=float(data.get("probability", defaults.probability)),
        )

    def apply(
        self, image: np.ndarray, rng: np.random.Generator, foreground: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, str | None]:
        """With `probability`, paint a random defect; else return the image with an empty mask."""
        img = as_image(image)
        if rng.random() >= self.probability:
            return img, np.zeros(img.shape[:2], dtype=bool), None
        return random_defect(img, rng, self.kinds, self.scale_range, foreground)
