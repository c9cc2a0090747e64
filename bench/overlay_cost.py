"""Cost of drawing one overlay (heatmap blended onto the part) on a 5 MP line-camera
image: a calm good part, and the same part with one warm spot.

    python bench/overlay_cost.py

`anomaly.inspection.overlays.overlay` colours and blends only the bounding box of the pixels warm
enough to show (opacity > 0); before 2026-11-24 it blended the whole frame.
"""

import time

import cv2
import numpy as np

from anomaly.inspection.overlays import overlay

rng = np.random.default_rng(0)
image = (rng.random((2048, 2448, 3)) * 255).astype(np.uint8)
calm = cv2.GaussianBlur(rng.random((2048, 2448)).astype(np.float32), (0, 0), 30) * 0.3
spot = calm.copy()
spot[900:1000, 1200:1300] = 1.5
for name, heatmap in (("good part (calm heatmap)", calm), ("one 100x100 px defect", spot)):
    overlay(image, heatmap, None, 0.62)
    t = time.perf_counter()
    for _ in range(10):
        overlay(image, heatmap, None, 0.62)
    print(f"{name}: {100 * (time.perf_counter() - t):.1f} ms per overlay (2048x2448, mean of 10)")
