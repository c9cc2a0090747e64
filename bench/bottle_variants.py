"""Real defects in other image shapes: a grayscale or non-square copy of an MVTec-style
category, to run bench/bottle.py on.

    python bench/bottle_variants.py gray  ../shared/datasets/mvtec_bottle /tmp/bottle-gray
    python bench/bottle_variants.py 3:2   ../shared/datasets/mvtec_bottle /tmp/bottle-3x2
    python bench/bottle_variants.py px192 ../shared/datasets/mvtec_bottle /tmp/bottle-192
    python bench/bottle.py --name default-gray --data /tmp/bottle-gray --quiet

Only bottle is at hand, but the default is judged on categories that are grayscale (MVTec's
grid, screw, zipper), not square, or small. `gray` writes every image as a single-channel
PNG; `pxN` shrinks every image and mask to N pixels on the long side (below the working
size the model enlarges them again); `W:H` resizes every image and mask to that aspect
ratio, the long side kept, so the parts are squeezed as a camera with another sensor shape
would frame them, and the model has to letterbox (below 2:1) or tile (2:1 and wider) them.
Masks are resized with nearest-neighbour, so they stay binary.
The copy goes outside the repository: the data's licence forbids copying it in.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
from tqdm import tqdm


def target_size(variant: str, h: int, w: int) -> tuple[int, int] | None:
    """(width, height) an h x w image is resized to; None to keep its size."""
    long_side = max(h, w)
    if variant.startswith("px"):
        scale = int(variant[2:]) / long_side
        return max(1, round(w * scale)), max(1, round(h * scale))
    if ":" in variant:
        w_ratio, h_ratio = (float(v) for v in variant.split(":"))
        if w_ratio >= h_ratio:
            return long_side, max(1, round(long_side * h_ratio / w_ratio))
        return max(1, round(long_side * w_ratio / h_ratio)), long_side
    return None


def convert(variant: str, source: Path, target: Path) -> int:
    """Write the variant of every PNG under `source` to the same path under `target`."""
    files = sorted(source.rglob("*.png"))
    if not files:
        raise SystemExit(f"error: {source}: no PNG images found")
    for path in tqdm(files, desc=f"{variant} copy", unit="img"):
        is_mask = "ground_truth" in path.parts
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SystemExit(f"error: {path}: cannot read image")
        if variant == "gray" and not is_mask and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        size = target_size(variant, *image.shape[:2])
        if size is not None:
            image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if is_mask else cv2.INTER_AREA)
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), image)
    return len(files)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variant", help="gray, pxN (long side N pixels), or an aspect ratio W:H such as 3:2 or 1:2")
    p.add_argument("source", type=Path)
    p.add_argument("target", type=Path)
    a = p.parse_args()
    ratio = a.variant.count(":") == 1 and all(v.replace(".", "", 1).isdigit() and float(v) > 0
                                               for v in a.variant.split(":"))
    if a.variant != "gray" and not ratio and not (a.variant.startswith("px") and a.variant[2:].isdigit()
                                                  and int(a.variant[2:]) > 0):
        p.error(f"variant must be gray, pxN or W:H, got {a.variant!r}")
    n = convert(a.variant, a.source, a.target)
    print(f"{n} images written to {a.target}")


if __name__ == "__main__":
    main()
