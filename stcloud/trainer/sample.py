"""A procedurally generated sample dataset + SimpleTuner-style config.

``ensure_sample(dest_dir)`` writes (idempotently and deterministically)::

    dest_dir/sample_dataset/sample_000.png + sample_000.txt ... sample_031.*
    dest_dir/sample_config.json       SimpleTuner-style config (model_type "lora")
    dest_dir/sample_dataloader.json   dataloader list pointing at sample_dataset (absolute path)

Files are only rewritten when their bytes differ, so calling it repeatedly is
cheap and leaves mtimes alone. Run it from a shell with
``python -m stcloud.trainer.sample DEST``.
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

NUM_IMAGES = 32
IMAGE_SIZE = 64
SAMPLE_SEED = 20240611

COLORS: list[tuple[str, tuple[int, int, int]]] = [
    ("red", (220, 40, 40)),
    ("orange", (240, 140, 30)),
    ("yellow", (235, 215, 50)),
    ("green", (50, 170, 70)),
    ("teal", (30, 160, 160)),
    ("blue", (40, 80, 220)),
    ("purple", (140, 60, 200)),
    ("pink", (235, 110, 170)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
]
SHAPES = ["circle", "square", "triangle", "ring", "diamond", "cross", "stripes", "dot grid"]
BACKGROUNDS = ["horizontal gradient", "vertical gradient", "diagonal gradient", "radial gradient", "plain"]


def _background(kind: str, c1, c2, size: int):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    if kind == "horizontal gradient":
        t = xx
    elif kind == "vertical gradient":
        t = yy
    elif kind == "diagonal gradient":
        t = (xx + yy) / 2.0
    elif kind == "radial gradient":
        t = np.clip(np.hypot(xx - 0.5, yy - 0.5) / math.sqrt(0.5), 0.0, 1.0)
    else:
        t = np.zeros_like(xx)
    a = np.asarray(c1, dtype=np.float64)
    b = np.asarray(c2, dtype=np.float64)
    img = a[None, None, :] * (1.0 - t[..., None]) + b[None, None, :] * t[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _draw_shape(draw, shape: str, color, cx: int, cy: int, r: int, size: int) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=color)
    elif shape == "ring":
        w = max(3, r // 3)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=color, width=w)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=color)
    elif shape == "cross":
        w = max(3, r // 3)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=color)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=color)
    elif shape == "stripes":
        step = max(6, r // 2)
        for x0 in range(0, size, step * 2):
            draw.rectangle((x0, 0, x0 + step - 1, size - 1), fill=color)
    else:  # dot grid
        step = max(10, r // 2)
        rad = max(2, step // 4)
        for gy in range(step // 2, size, step):
            for gx in range(step // 2, size, step):
                draw.ellipse((gx - rad, gy - rad, gx + rad, gy + rad), fill=color)


def generate_image(index: int, size: int = IMAGE_SIZE) -> tuple[bytes, str]:
    """Return (PNG bytes, caption) for sample ``index``; pure function of the index."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([SAMPLE_SEED, index])
    shape = SHAPES[index % len(SHAPES)]
    fg_name, fg = COLORS[(index * 3 + 1) % len(COLORS)]
    bg_kind = BACKGROUNDS[(index // len(SHAPES) + index) % len(BACKGROUNDS)]
    bg1_name, bg1 = COLORS[(index * 7 + 5) % len(COLORS)]
    bg2_name, bg2 = COLORS[(index * 5 + 2) % len(COLORS)]
    if bg1_name == fg_name:
        bg1_name, bg1 = COLORS[(index * 7 + 6) % len(COLORS)]
    if bg_kind == "plain":
        bg2 = bg1
    img = Image.fromarray(_background(bg_kind, bg1, bg2, size), "RGB")
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(size // 6, size // 3 + 1))
    cx = int(rng.integers(r, size - r + 1))
    cy = int(rng.integers(r, size - r + 1))
    _draw_shape(draw, shape, fg, cx, cy, r, size)
    if shape == "stripes":
        subject = f"{fg_name} stripes"
    else:
        subject = f"{'an' if fg_name[0] in 'aeiou' else 'a'} {fg_name} {shape}"
    if bg_kind == "plain":
        caption = f"{subject} on a plain {bg1_name} background"
    else:
        caption = f"{subject} on a {bg1_name} to {bg2_name} {bg_kind} background"
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue(), caption


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def sample_config(dataloader_path: Path) -> dict[str, Any]:
    return {
        "model_type": "lora",
        "model_family": "reference",
        "pretrained_model_name_or_path": "stcloud/reference-linear",
        "lora_type": "standard",
        "lora_rank": 4,
        "lora_alpha": 4,
        "max_train_steps": 200,
        "checkpointing_steps": 50,
        "checkpoints_total_limit": 5,
        "learning_rate": 3e-3,
        "lr_scheduler": "constant",
        "lr_warmup_steps": 0,
        "train_batch_size": 4,
        "seed": 42,
        "resolution": 32,
        "resolution_type": "pixel",
        "mixed_precision": "no",
        "optimizer": "adamw",
        "output_dir": "output",
        "resume_from_checkpoint": "latest",
        "data_backend_config": str(dataloader_path),
        "report_to": "none",
        "tracker_project_name": "stcloud-sample",
        "tracker_run_name": "sample-lora",
        "validation_prompt": "a red circle on a blue to white horizontal gradient background",
        # The reference trainer needs ~1 ms a step; pace the sample so the first run can be
        # watched (progress bar, live log, loss chart). Remove it for full speed.
        "step_delay_seconds": 0.03,
    }


def sample_dataloader(dataset_dir: Path) -> list[dict[str, Any]]:
    return [
        {
            "id": "sample-shapes",
            "type": "local",
            "dataset_type": "image",
            "instance_data_dir": str(dataset_dir),
            "caption_strategy": "textfile",
            "resolution": 32,
            "resolution_type": "pixel",
            "minimum_image_size": 32,
            "crop": False,
            "repeats": 0,
        },
        {
            "id": "sample-text-embeds",
            "type": "local",
            "dataset_type": "text_embeds",
            "default": True,
            "cache_dir": "cache/text",
        },
    ]


def ensure_sample(dest_dir: str | Path) -> dict[str, Any]:
    """Create the sample dataset/config under ``dest_dir`` (idempotent); return the paths."""
    dest = Path(dest_dir).expanduser().resolve()
    dataset_dir = dest / "sample_dataset"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(NUM_IMAGES):
        png, caption = generate_image(i)
        stem = dataset_dir / f"sample_{i:03d}"
        _write_if_changed(stem.with_suffix(".png"), png)
        _write_if_changed(stem.with_suffix(".txt"), (caption + "\n").encode("utf-8"))
        images.append(str(stem.with_suffix(".png")))
    dataloader_path = dest / "sample_dataloader.json"
    config_path = dest / "sample_config.json"
    _write_if_changed(
        dataloader_path, (json.dumps(sample_dataloader(dataset_dir), indent=2) + "\n").encode("utf-8")
    )
    _write_if_changed(config_path, (json.dumps(sample_config(dataloader_path), indent=2) + "\n").encode("utf-8"))
    return {
        "root": str(dest),
        "dataset_dir": str(dataset_dir),
        "config_path": str(config_path),
        "dataloader_path": str(dataloader_path),
        "num_images": NUM_IMAGES,
        "images": images,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m stcloud.trainer.sample DEST_DIR", file=sys.stderr)
        return 2
    try:
        info = ensure_sample(argv[0])
    except OSError as exc:
        print(f"error: cannot write sample to {argv[0]}: {exc}", file=sys.stderr)
        return 2
    info = {k: v for k, v in info.items() if k != "images"}
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
