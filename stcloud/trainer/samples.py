"""The sample image saved in every checkpoint of the reference trainer (``sample.png``).

What it shows is computed from the adapter being saved, so a gallery of checkpoints shows the
training at work: for up to four fixed probe images of the dataset, one row each of

    noisy input | model output (base + adapter) | adapter contribution | clean target

The probes and their noise come from a generator of their own (seeded from ``seed``), never
from the training generators, so rendering a sample cannot change the training (resumed runs
stay bit-identical) and the same checkpoint always renders the same bytes.
"""
from __future__ import annotations

import io

import numpy as np

SAMPLE_NAME = "sample.png"
MAX_PROBES = 4
ZOOM = 4  # the working resolution is tiny (32 px): enlarge with nearest neighbour


def _to_pixels(vec: np.ndarray, size: int, channels: int) -> np.ndarray:
    img = np.clip((vec + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    img = img.reshape(size, size, channels) if channels > 1 else img.reshape(size, size)
    return img.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)


def _normalised(vec: np.ndarray) -> np.ndarray:
    """The adapter's contribution is small: stretch it to [-1, 1] so it is visible."""
    peak = float(np.max(np.abs(vec))) if vec.size else 0.0
    return vec / peak if peak > 0 else vec


def render(params: dict[str, np.ndarray], w0_t: np.ndarray, data: np.ndarray, *, scale: float,
           noise_std: float, seed: int, resolution: int, channels: int) -> bytes:
    """PNG bytes of the sample grid for the adapter ``params`` (deterministic)."""
    from PIL import Image

    rng = np.random.default_rng([seed, 0x5A4E])
    n = min(MAX_PROBES, data.shape[0])
    x = data[:n]
    xn = x + max(noise_std, 0.1) * rng.standard_normal(x.shape)
    delta = scale * ((xn @ params["lora_A"].T) @ params["lora_B"].T)
    y = xn @ w0_t + delta
    rows = []
    for i in range(n):
        tiles = [_to_pixels(xn[i], resolution, channels), _to_pixels(y[i], resolution, channels),
                 _to_pixels(_normalised(delta[i]), resolution, channels), _to_pixels(x[i], resolution, channels)]
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG", optimize=False)
    return buf.getvalue()
