"""Do the sharpening terms sharpen? Compares pixel autoencoders' reconstructions of good
test images with the images themselves.

    python bench/sharpness.py DATA MODEL_DIR [MODEL_DIR ...]

For each trained pixel-autoencoder folder (`anomaly train --model ae|vae ...`), on the
good test images of the MVTec-style folder DATA at the model's working size:
- gradient ratio: mean Sobel gradient magnitude of the reconstruction over that of the
  input (1.0 = as sharp as the input; a blurring autoencoder stays below);
- edge error and flat error: mean absolute reconstruction error on the 10% of pixels with
  the strongest input gradient, and on the 50% with the weakest. Blur shows as edge error
  on every good part, where it hides small defects.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def gradient_magnitude(rgb: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY)
    return np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def measure(data: Path, model_dir: Path) -> dict[str, float]:
    import torch

    from anomaly.training.detector import Detector
    from anomaly.inspection.imageio import list_images, prepare, read_image
    from anomaly.training.fit import to_tensor

    detector = Detector.load(model_dir)
    ratios, edge_err, flat_err = [], [], []
    for path in list_images(data / "test" / "good"):
        for view in prepare(read_image(path), *detector.model_config.grid)[0]:
            with torch.no_grad():
                recon = detector.module.reconstruct(to_tensor([view])).clamp(0, 1)[0].numpy().transpose(1, 2, 0)
            g_in, g_out = gradient_magnitude(view), gradient_magnitude(recon)
            err = np.abs(recon - view).mean(axis=2)
            ratios.append(g_out.mean() / g_in.mean())
            edge_err.append(err[g_in >= np.quantile(g_in, 0.9)].mean())
            flat_err.append(err[g_in <= np.quantile(g_in, 0.5)].mean())
    return {"gradient ratio": float(np.mean(ratios)), "edge error": float(np.mean(edge_err)),
            "flat error": float(np.mean(flat_err)), "images": len(ratios)}


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data = Path(sys.argv[1])
    print("| model | gradient ratio | edge error | flat error | good images |")
    print("|---|---|---|---|---|")
    for model_dir in map(Path, sys.argv[2:]):
        m = measure(data, model_dir)
        print(f"| {model_dir.name} | {m['gradient ratio']:.3f} | {m['edge error']:.4f} | {m['flat error']:.4f} | {m['images']} |")


if __name__ == "__main__":
    main()
