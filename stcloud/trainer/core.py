"""The stcloud reference trainer: a small but real LoRA trainer in numpy.

Model
-----
Images are centre-cropped, downsampled to ``S x S`` (grayscale by default),
scaled to [-1, 1] and flattened to vectors ``x`` of ``D = S*S*C`` features.
The "pretrained base model" is a frozen random linear map ``W0`` (``D x D``,
drawn from ``base_model_seed``; it is never saved because it is regenerated
from that seed). The adapter is a standard LoRA pair: ``A`` (``r x D``,
kaiming-uniform init) and ``B`` (``D x r``, zero init), scaled by
``lora_alpha / r``. The training task is denoising: given ``x + noise_std*eps``
predict ``x``:

    y = W0 @ xn + (alpha / r) * B @ (A @ xn),   loss = mean((y - x) ** 2)

Gradients are analytic; the optimiser is AdamW (float64 master weights).
Everything that is random (adapter init, per-epoch shuffling, noise) comes from
seeded numpy ``PCG64`` generators whose state is saved in every checkpoint, so
resuming from checkpoint ``N`` reproduces an uninterrupted run bit for bit.

See ``stcloud/trainer/__init__.py`` for the CLI, config keys and file layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import _cancel, samples
from .protocol import format_checkpoint, format_progress, format_resumed, format_stage

TRAINER_FORMAT = "stcloud-reference-trainer/1"
BASE_MODEL_NAME = "stcloud-reference-linear"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
RANDOM_STATES_NAME = "random_states.json"
TRAINER_STATE_NAME = "trainer_state.json"
SUMMARY_NAME = "training_summary.json"
CHECKPOINT_DIR_RE = re.compile(r"^checkpoint-(\d+)$")
MAX_FEATURES = 4096  # D = S*S*C; W0 is D x D float64 (128 MiB at the cap)
STEP_DELAY_ENV = "STCLOUD_TRAINER_STEP_DELAY"
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2


class TrainerError(Exception):
    """Bad input (config, dataloader, dataset, checkpoint). Exit code 2."""

    exit_code = EXIT_BAD_INPUT


class Cancelled(Exception):
    def __init__(self, signum: int):
        super().__init__(f"cancelled by signal {signum}")
        self.signum = signum


def _check_cancel() -> None:
    signum = _cancel.requested()
    if signum is not None:
        raise Cancelled(signum)


def _sleep(seconds: float) -> None:
    """Sleep in small slices so SIGTERM is honoured promptly."""
    deadline = time.monotonic() + seconds
    while True:
        _check_cancel()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, 0.05))


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    max_train_steps: int = 200
    checkpointing_steps: int = 50
    learning_rate: float = 1e-3
    seed: int = 42
    resolution: int = 32
    lora_rank: int = 4
    lora_alpha: float | None = None  # None -> lora_rank (scale 1.0)
    train_batch_size: int = 4
    output_dir: str = "output"
    resume_from_checkpoint: str | None = None
    init_lora_weights: str | None = None  # a LoRA file to start from (step 0), e.g. a pipeline parent's
    checkpoints_total_limit: int | None = None
    step_delay_seconds: float = 0.0
    # SIGTERM saves a checkpoint at the current step before stopping (the worker agent turns
    # this on, so a cancelled run — e.g. one stopped by a spending cap — keeps its progress).
    checkpoint_on_cancel: bool = False
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    adam_weight_decay: float = 0.0
    max_grad_norm: float | None = None
    logging_steps: int | None = None
    noise_std: float = 0.1
    image_channels: int = 1
    reference_max_resolution: int = 32
    base_model_seed: int = 0
    data_backend_config: str | None = None

    @property
    def work_resolution(self) -> int:
        return min(self.resolution, self.reference_max_resolution)

    @property
    def features(self) -> int:
        return self.work_resolution * self.work_resolution * self.image_channels

    @property
    def alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else self.lora_rank)


LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


def normalize_key(key: str) -> str:
    """SimpleTuner config.json files often use CLI-style keys ("--learning_rate")."""
    return key.strip().lstrip("-").replace("-", "_")


def _bad(key: str, value: Any, expected: str) -> TrainerError:
    return TrainerError(f"invalid config value {key}={json.dumps(value)}: expected {expected}")


def _to_int(key, value, *, minimum=None, maximum=None, allow_none=False):
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if allow_none:
            return None
        raise _bad(key, value, "an integer")
    if isinstance(value, bool):
        raise _bad(key, value, "an integer")
    result = None
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        result = int(value)
    elif isinstance(value, str):
        try:
            result = int(value.strip())
        except ValueError:
            try:
                f = float(value.strip())
            except ValueError:
                f = None
            if f is not None and math.isfinite(f) and f.is_integer():
                result = int(f)
    if result is None:
        raise _bad(key, value, "an integer")
    if minimum is not None and result < minimum:
        raise _bad(key, value, f"an integer >= {minimum}")
    if maximum is not None and result > maximum:
        raise _bad(key, value, f"an integer <= {maximum}")
    return result


def _to_float(key, value, *, minimum=None, maximum=None, strict_min=False, allow_none=False):
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if allow_none:
            return None
        raise _bad(key, value, "a number")
    if isinstance(value, bool):
        raise _bad(key, value, "a number")
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _bad(key, value, "a number") from None
    if not math.isfinite(result):
        raise _bad(key, value, "a finite number")
    if minimum is not None and (result <= minimum if strict_min else result < minimum):
        raise _bad(key, value, f"a number {'>' if strict_min else '>='} {minimum}")
    if maximum is not None and result > maximum:
        raise _bad(key, value, f"a number <= {maximum}")
    return result


def _to_str(key, value, *, allow_none=True):
    if value is None:
        if allow_none:
            return None
        raise _bad(key, value, "a string")
    if isinstance(value, (str, os.PathLike)):
        s = os.fspath(value).strip()
        if s == "" or s.lower() in ("none", "null", "false"):
            return None if allow_none else s
        return s
    if value is False and allow_none:
        return None
    raise _bad(key, value, "a string")


def parse_config(raw: dict[str, Any], *, env: dict[str, str] | None = None) -> TrainConfig:
    """Validate a SimpleTuner-style config dict. Unknown keys are ignored."""
    if not isinstance(raw, dict):
        raise TrainerError("config must be a JSON object")
    env = os.environ if env is None else env
    data = {normalize_key(str(k)): v for k, v in raw.items()}
    cfg = TrainConfig()

    def has(key):
        return key in data

    if has("max_train_steps"):
        cfg.max_train_steps = _to_int("max_train_steps", data["max_train_steps"], minimum=1, maximum=10_000_000)
    if has("checkpointing_steps"):
        v = _to_int("checkpointing_steps", data["checkpointing_steps"], minimum=0, allow_none=True)
        cfg.checkpointing_steps = v or 0  # 0 / null disables periodic checkpoints
    if has("learning_rate"):
        cfg.learning_rate = _to_float("learning_rate", data["learning_rate"], minimum=0.0, strict_min=True, maximum=10.0)
    if has("seed"):
        v = _to_int("seed", data["seed"], minimum=0, maximum=2**63 - 1, allow_none=True)
        cfg.seed = 42 if v is None else v
    if has("resolution"):
        rtype = str(data.get("resolution_type") or "pixel").strip().lower()
        if rtype == "area":  # SimpleTuner: megapixels
            mp = _to_float("resolution", data["resolution"], minimum=0.0, strict_min=True, maximum=1000.0)
            cfg.resolution = max(1, int(round(math.sqrt(mp * 1_000_000))))
        else:
            cfg.resolution = _to_int("resolution", data["resolution"], minimum=4, maximum=16384)
    if has("lora_rank"):
        cfg.lora_rank = _to_int("lora_rank", data["lora_rank"], minimum=1, maximum=1024)
    if has("lora_alpha"):
        cfg.lora_alpha = _to_float("lora_alpha", data["lora_alpha"], minimum=0.0, strict_min=True, allow_none=True)
    if has("train_batch_size"):
        cfg.train_batch_size = _to_int("train_batch_size", data["train_batch_size"], minimum=1, maximum=4096)
    if has("output_dir"):
        v = _to_str("output_dir", data["output_dir"])
        cfg.output_dir = v or "output"
    if has("resume_from_checkpoint"):
        cfg.resume_from_checkpoint = _to_str("resume_from_checkpoint", data["resume_from_checkpoint"])
    if has("init_lora_weights"):
        cfg.init_lora_weights = _to_str("init_lora_weights", data["init_lora_weights"])
    if has("checkpoints_total_limit"):
        cfg.checkpoints_total_limit = _to_int(
            "checkpoints_total_limit", data["checkpoints_total_limit"], minimum=1, allow_none=True
        )
    if has("step_delay_seconds"):
        cfg.step_delay_seconds = _to_float("step_delay_seconds", data["step_delay_seconds"], minimum=0.0, maximum=3600.0)
    if has("checkpoint_on_cancel"):
        v = data["checkpoint_on_cancel"]
        if not isinstance(v, bool):
            raise _bad("checkpoint_on_cancel", v, "true or false")
        cfg.checkpoint_on_cancel = v
    if env.get(STEP_DELAY_ENV, "").strip():
        cfg.step_delay_seconds = _to_float(STEP_DELAY_ENV, env[STEP_DELAY_ENV], minimum=0.0, maximum=3600.0)
    if has("lr_scheduler"):
        v = _to_str("lr_scheduler", data["lr_scheduler"]) or "constant"
        if v not in LR_SCHEDULERS:
            raise _bad("lr_scheduler", data["lr_scheduler"], "one of " + ", ".join(LR_SCHEDULERS))
        cfg.lr_scheduler = v
    if has("lr_warmup_steps"):
        cfg.lr_warmup_steps = _to_int("lr_warmup_steps", data["lr_warmup_steps"], minimum=0, allow_none=True) or 0
    if has("adam_beta1"):
        cfg.adam_beta1 = _to_float("adam_beta1", data["adam_beta1"], minimum=0.0, maximum=0.999999)
    if has("adam_beta2"):
        cfg.adam_beta2 = _to_float("adam_beta2", data["adam_beta2"], minimum=0.0, maximum=0.999999)
    if has("adam_epsilon"):
        cfg.adam_epsilon = _to_float("adam_epsilon", data["adam_epsilon"], minimum=0.0, strict_min=True, maximum=1.0)
    if has("adam_weight_decay"):
        cfg.adam_weight_decay = _to_float("adam_weight_decay", data["adam_weight_decay"], minimum=0.0, maximum=10.0)
    if has("max_grad_norm"):
        v = _to_float("max_grad_norm", data["max_grad_norm"], minimum=0.0, allow_none=True)
        cfg.max_grad_norm = v if v else None
    if has("logging_steps"):
        cfg.logging_steps = _to_int("logging_steps", data["logging_steps"], minimum=1, allow_none=True)
    if has("noise_std"):
        cfg.noise_std = _to_float("noise_std", data["noise_std"], minimum=0.0, maximum=10.0)
    if has("image_channels"):
        v = _to_int("image_channels", data["image_channels"], minimum=1, maximum=3)
        if v not in (1, 3):
            raise _bad("image_channels", data["image_channels"], "1 (grayscale) or 3 (RGB)")
        cfg.image_channels = v
    if has("reference_max_resolution"):
        cfg.reference_max_resolution = _to_int(
            "reference_max_resolution", data["reference_max_resolution"], minimum=4, maximum=64
        )
    if has("base_model_seed"):
        cfg.base_model_seed = _to_int("base_model_seed", data["base_model_seed"], minimum=0, maximum=2**63 - 1)
    if has("data_backend_config"):
        cfg.data_backend_config = _to_str("data_backend_config", data["data_backend_config"])

    if cfg.features > MAX_FEATURES:
        raise TrainerError(
            f"invalid config: {cfg.work_resolution}x{cfg.work_resolution}x{cfg.image_channels} = "
            f"{cfg.features} features exceeds the reference trainer's limit of {MAX_FEATURES}; "
            "lower resolution/reference_max_resolution or use image_channels=1"
        )
    if cfg.lora_rank > cfg.features:
        raise _bad("lora_rank", cfg.lora_rank, f"an integer <= {cfg.features} (the number of features)")
    if cfg.lr_warmup_steps > cfg.max_train_steps and cfg.lr_scheduler != "constant":
        raise _bad("lr_warmup_steps", cfg.lr_warmup_steps, f"an integer <= max_train_steps ({cfg.max_train_steps})")
    return cfg


def learning_rate_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate used for (1-based) ``step``."""
    base = cfg.learning_rate
    warm = cfg.lr_warmup_steps if cfg.lr_scheduler != "constant" else 0
    if warm and step <= warm:
        return base * step / warm
    if cfg.lr_scheduler in ("constant", "constant_with_warmup"):
        return base
    total = max(1, cfg.max_train_steps - warm)
    progress = min(1.0, max(0.0, (step - warm) / total))
    if cfg.lr_scheduler == "linear":
        return base * max(0.0, 1.0 - progress)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainerError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise TrainerError(f"{what} is a directory, expected a JSON file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainerError(f"cannot read {what} {path}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainerError(f"{what} {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None


# --------------------------------------------------------------------------- dataset


@dataclass
class DatasetItem:
    path: Path
    caption: str
    backend_id: str


def load_dataloader(path: Path) -> list[dict[str, Any]]:
    data = _read_json(path, "dataloader config")
    if isinstance(data, dict):
        # tolerate {"datasets": [...]} / a single backend object
        data = data.get("datasets", data.get("backends", [data]))
    if not isinstance(data, list) or not all(isinstance(b, dict) for b in data):
        raise TrainerError(f"dataloader config {path} must be a JSON list of backend objects")
    return data


def _caption_for(image: Path, strategy: str, backend: dict[str, Any]) -> str:
    from_name = image.stem.replace("_", " ").replace("-", " ").strip()
    if strategy == "textfile":
        txt = image.with_suffix(".txt")
        if txt.is_file():
            try:
                text = txt.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                text = ""
            if text:
                return text.splitlines()[0].strip()
        return from_name
    if strategy == "filename":
        return from_name
    # instanceprompt
    return str(backend.get("instance_prompt") or from_name)


def collect_dataset(backends: list[dict[str, Any]], base_dir: Path) -> list[DatasetItem]:
    """Resolve SimpleTuner dataloader entries to (image, caption) pairs.

    Only ``type: local`` image backends are used. Entries with ``dataset_type``
    ``text_embeds``/``image_embeds``/``conditioning`` and ``disabled: true``
    entries are skipped. Relative ``instance_data_dir`` paths are resolved
    against ``base_dir`` (the dataloader file's directory).
    """
    items: list[DatasetItem] = []
    used = 0
    for index, backend in enumerate(backends):
        bid = str(backend.get("id") or f"backend-{index}")
        dtype = str(backend.get("dataset_type") or "image").strip().lower()
        if dtype in ("text_embeds", "image_embeds", "conditioning", "conditioning_image_embeds"):
            continue
        if backend.get("disabled") or backend.get("disable"):
            continue
        if dtype not in ("image", "video"):
            raise TrainerError(f"dataloader backend '{bid}': unsupported dataset_type '{dtype}'")
        btype = str(backend.get("type") or "local").strip().lower()
        if btype != "local":
            raise TrainerError(
                f"dataloader backend '{bid}': type '{btype}' is not supported by the reference trainer (only 'local')"
            )
        raw_dir = backend.get("instance_data_dir")
        if not isinstance(raw_dir, str) or not raw_dir.strip():
            raise TrainerError(f"dataloader backend '{bid}': missing instance_data_dir")
        data_dir = Path(raw_dir.strip()).expanduser()
        if not data_dir.is_absolute():
            data_dir = base_dir / data_dir
        if not data_dir.exists():
            raise TrainerError(f"dataset directory not found: {data_dir} (backend '{bid}')")
        if not data_dir.is_dir():
            raise TrainerError(f"dataset path is not a directory: {data_dir} (backend '{bid}')")
        strategy = str(backend.get("caption_strategy") or "textfile").strip().lower()
        if strategy not in ("textfile", "filename", "instanceprompt"):
            raise TrainerError(
                f"dataloader backend '{bid}': caption_strategy '{strategy}' is not supported "
                "(use textfile, filename or instanceprompt)"
            )
        repeats = _to_int(f"{bid}.repeats", backend.get("repeats", 0), minimum=0, maximum=1000, allow_none=True) or 0
        try:
            images = sorted(
                p
                for p in data_dir.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
            )
        except OSError as exc:
            raise TrainerError(f"cannot list dataset directory {data_dir}: {exc}") from None
        if not images:
            raise TrainerError(f"no images found in {data_dir} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        used += 1
        for image in images:
            caption = _caption_for(image, strategy, backend)
            for _ in range(1 + repeats):
                items.append(DatasetItem(image, caption, bid))
    if used == 0:
        raise TrainerError("dataloader config has no usable image backend (need an entry with type 'local')")
    return items


def load_images(items: list[DatasetItem], resolution: int, channels: int,
                warn: Callable[[str], None]) -> tuple[np.ndarray, list[DatasetItem]]:
    """Decode, centre-crop, resize and normalise images into an (N, D) float64 array."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    cache: dict[Path, np.ndarray | None] = {}
    rows: list[np.ndarray] = []
    kept: list[DatasetItem] = []
    for item in items:
        _check_cancel()
        if item.path not in cache:
            try:
                with Image.open(item.path) as im:
                    im = ImageOps.exif_transpose(im)
                    if im.mode in ("RGBA", "LA", "P"):
                        im = im.convert("RGBA")
                        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                        im = Image.alpha_composite(bg, im)
                    im = im.convert("RGB" if channels == 3 else "L")
                    w, h = im.size
                    side = min(w, h)
                    left, top = (w - side) // 2, (h - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                    im = im.resize((resolution, resolution), Image.Resampling.BOX)
                    arr = np.asarray(im, dtype=np.float64) / 127.5 - 1.0
                cache[item.path] = arr.reshape(-1)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                warn(f"warning: skipping unreadable image {item.path}: {exc}")
                cache[item.path] = None
        row = cache[item.path]
        if row is not None:
            rows.append(row)
            kept.append(item)
    if not rows:
        raise TrainerError("no readable images in the dataset")
    return np.ascontiguousarray(np.stack(rows)), kept


# --------------------------------------------------------------------------- model / optimiser


class BatchSampler:
    """Epoch-wise shuffled minibatches from a seeded generator (state is checkpointed)."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n = n
        self.rng = rng
        self.perm: np.ndarray | None = None
        self.cursor = 0
        self.epoch = 0

    def next_batch(self, size: int) -> np.ndarray:
        out: list[int] = []
        while len(out) < size:
            if self.perm is None or self.cursor >= self.n:
                self.perm = self.rng.permutation(self.n)
                self.cursor = 0
                self.epoch += 1
            take = min(size - len(out), self.n - self.cursor)
            out.extend(int(i) for i in self.perm[self.cursor : self.cursor + take])
            self.cursor += take
        return np.asarray(out, dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {
            "bit_generator": self.rng.bit_generator.state,
            "perm": None if self.perm is None else [int(i) for i in self.perm],
            "cursor": self.cursor,
            "epoch": self.epoch,
            "n": self.n,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:
            raise TrainerError(
                f"dataset size changed since the checkpoint ({state['n']} -> {self.n} images); cannot resume"
            )
        self.rng.bit_generator.state = state["bit_generator"]
        self.perm = None if state["perm"] is None else np.asarray(state["perm"], dtype=np.int64)
        self.cursor = int(state["cursor"])
        self.epoch = int(state["epoch"])


def make_base(cfg: TrainConfig) -> np.ndarray:
    """The frozen 'pretrained' base map W0 (D x D), regenerated from base_model_seed."""
    d = cfg.features
    rng = np.random.default_rng([cfg.base_model_seed, d, 0x57C1])
    return np.ascontiguousarray(rng.standard_normal((d, d)) * (0.1 / math.sqrt(d)))


def init_adapter(cfg: TrainConfig) -> dict[str, np.ndarray]:
    d, r = cfg.features, cfg.lora_rank
    rng = np.random.default_rng([cfg.seed, 0xA11A])
    bound = 1.0 / math.sqrt(d)  # kaiming_uniform(a=sqrt(5)) as in PEFT
    return {
        "lora_A": rng.uniform(-bound, bound, size=(r, d)),
        "lora_B": np.zeros((d, r), dtype=np.float64),
    }


def forward_backward(
    params: dict[str, np.ndarray], w0_t: np.ndarray, x: np.ndarray, xn: np.ndarray, scale: float
) -> tuple[float, dict[str, np.ndarray]]:
    a, b = params["lora_A"], params["lora_B"]
    h = xn @ a.T  # (n, r)
    y = xn @ w0_t + scale * (h @ b.T)  # (n, D)
    resid = y - x
    loss = float(np.mean(resid * resid))
    g = resid * (2.0 / resid.size)
    grad_b = scale * (g.T @ h)  # (D, r)
    grad_h = scale * (g @ b)  # (n, r)
    grad_a = grad_h.T @ xn  # (r, D)
    return loss, {"lora_A": grad_a, "lora_B": grad_b}


class AdamW:
    def __init__(self, params: dict[str, np.ndarray], cfg: TrainConfig):
        self.cfg = cfg
        self.t = 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> float:
        cfg = self.cfg
        gnorm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        if cfg.max_grad_norm and gnorm > cfg.max_grad_norm:
            factor = cfg.max_grad_norm / (gnorm + 1e-12)
            grads = {k: g * factor for k, g in grads.items()}
        self.t += 1
        b1, b2, eps = cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        for k in sorted(params):
            g = grads[k]
            m = self.m[k]
            v = self.v[k]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            if cfg.adam_weight_decay:
                params[k] *= 1.0 - lr * cfg.adam_weight_decay
            params[k] -= lr * (m / c1) / (np.sqrt(v / c2) + eps)
        return gnorm


# --------------------------------------------------------------------------- checkpoints


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _weights_metadata(cfg: TrainConfig, step: int) -> dict[str, str]:
    return {
        "format": "pt",
        "trainer": TRAINER_FORMAT,
        "base_model": BASE_MODEL_NAME,
        "base_model_seed": str(cfg.base_model_seed),
        "lora_rank": str(cfg.lora_rank),
        "lora_alpha": repr(cfg.alpha),
        "rank": str(cfg.lora_rank),
        "steps": str(step),
        "seed": str(cfg.seed),
        "resolution": str(cfg.work_resolution),
        "image_channels": str(cfg.image_channels),
        "in_features": str(cfg.features),
        "out_features": str(cfg.features),
        "target_modules": "adapter",
    }


def save_adapter(path: Path, params: dict[str, np.ndarray], cfg: TrainConfig, step: int) -> None:
    """PEFT/diffusers-style LoRA file (float32), written via safetensors.numpy."""
    from safetensors.numpy import save_file

    tensors = {
        "adapter.lora_A.weight": np.ascontiguousarray(params["lora_A"], dtype=np.float32),
        "adapter.lora_B.weight": np.ascontiguousarray(params["lora_B"], dtype=np.float32),
    }
    save_file(tensors, str(path), metadata=_weights_metadata(cfg, step))


def _list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    try:
        entries = list(output_dir.iterdir())
    except OSError:
        return []
    for p in entries:
        m = CHECKPOINT_DIR_RE.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE_NAME).is_file():
            found.append((int(m.group(1)), p))
    found.sort()
    return found


def find_latest_checkpoint(output_dir: Path) -> Path | None:
    """Newest *complete* checkpoint-<step> dir (has trainer_state.json), or None."""
    cps = _list_checkpoints(output_dir)
    return cps[-1][1] if cps else None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_temp(output_dir: Path) -> None:
    """Remove temp/trash dirs left by a killed trainer (never a live one's)."""
    try:
        entries = list(output_dir.iterdir())
    except OSError:
        return
    for p in entries:
        m = re.match(r"^\.(?:tmp|trash)-checkpoint-\d+-(\d+)$", p.name) or re.match(
            r"^\..+\.tmp-(\d+)$", p.name
        )
        if m and not _pid_alive(int(m.group(1))):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    p.unlink()
                except OSError:
                    pass


@dataclass
class TrainState:
    step: int
    params: dict[str, np.ndarray]
    opt: AdamW
    sampler: BatchSampler
    noise_rng: np.random.Generator
    loss_history: list[float]
    train_seconds: float
    dataset_digest: str
    num_images: int


def save_checkpoint(output_dir: Path, state: TrainState, cfg: TrainConfig, sample: bytes | None = None) -> Path:
    """Write checkpoint-<step>/ atomically: build in a temp dir, fsync, rename. ``sample``:
    the PNG bytes of the checkpoint's sample image (:mod:`.samples`)."""
    from safetensors.numpy import save_file

    step = state.step
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_adapter(tmp / WEIGHTS_NAME, state.params, cfg, step)
    opt_tensors = {}
    for k in sorted(state.params):
        opt_tensors[f"param.{k}"] = np.ascontiguousarray(state.params[k])
        opt_tensors[f"exp_avg.{k}"] = np.ascontiguousarray(state.opt.m[k])
        opt_tensors[f"exp_avg_sq.{k}"] = np.ascontiguousarray(state.opt.v[k])
    save_file(opt_tensors, str(tmp / OPTIMIZER_NAME), metadata={"optimizer": "adamw", "t": str(state.opt.t)})
    rng_state = {
        "sampler": state.sampler.state(),
        "noise": state.noise_rng.bit_generator.state,
    }
    (tmp / RANDOM_STATES_NAME).write_text(json.dumps(rng_state), encoding="utf-8")
    if sample is not None:
        (tmp / samples.SAMPLE_NAME).write_bytes(sample)
    trainer_state = {
        "format": TRAINER_FORMAT,
        "global_step": step,
        "max_train_steps": cfg.max_train_steps,
        "seed": cfg.seed,
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.alpha,
        "resolution": cfg.work_resolution,
        "image_channels": cfg.image_channels,
        "in_features": cfg.features,
        "base_model_seed": cfg.base_model_seed,
        "num_images": state.num_images,
        "dataset_digest": state.dataset_digest,
        "epoch": state.sampler.epoch,
        "learning_rate": learning_rate_at(cfg, step) if step else cfg.learning_rate,
        "train_seconds": state.train_seconds,
        "loss": state.loss_history[-1] if state.loss_history else None,
        "loss_history": state.loss_history,
        "saved_at": time.time(),
    }
    # trainer_state.json is written last: it marks the checkpoint complete.
    (tmp / TRAINER_STATE_NAME).write_text(json.dumps(trainer_state), encoding="utf-8")
    for f in tmp.iterdir():
        _fsync_path(f)
    _fsync_path(tmp, directory=True)
    trash = None
    if final.exists():
        trash = output_dir / f".trash-checkpoint-{step}-{os.getpid()}"
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
    tmp.rename(final)
    _fsync_path(output_dir, directory=True)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def prune_checkpoints(output_dir: Path, limit: int | None) -> None:
    if not limit:
        return
    cps = _list_checkpoints(output_dir)
    for _, path in cps[: max(0, len(cps) - limit)]:
        shutil.rmtree(path, ignore_errors=True)


def resolve_resume_path(cfg: TrainConfig, output_dir: Path) -> Path | None:
    value = cfg.resume_from_checkpoint
    if not value:
        return None
    if value.lower() == "latest":
        return find_latest_checkpoint(output_dir)
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [p, output_dir / p]
    for c in candidates:
        if c.is_dir():
            if not (c / TRAINER_STATE_NAME).is_file():
                raise TrainerError(f"resume_from_checkpoint {c} is not a complete checkpoint (no {TRAINER_STATE_NAME})")
            return c.resolve()
    raise TrainerError(f"resume_from_checkpoint not found: {value}")


def load_initial_weights(path: Path, params: dict[str, np.ndarray]) -> None:
    """Start from a LoRA file ``save_adapter`` wrote (same rank and size), at step 0."""
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types
        raise TrainerError(f"init_lora_weights {path}: cannot read it: {exc}") from None
    for name in ("lora_A", "lora_B"):
        arr = tensors.get(f"adapter.{name}.weight")
        if arr is None or arr.shape != params[name].shape:
            raise TrainerError(f"init_lora_weights {path}: adapter.{name}.weight missing or of shape "
                               f"{None if arr is None else arr.shape}, expected {params[name].shape}")
        params[name] = np.array(arr, dtype=np.float64, copy=True)


def load_checkpoint(path: Path, state: TrainState, cfg: TrainConfig, warn: Callable[[str], None]) -> None:
    from safetensors.numpy import load_file

    ts = _read_json(path / TRAINER_STATE_NAME, "checkpoint trainer state")
    try:
        if ts.get("format") != TRAINER_FORMAT:
            raise TrainerError(f"checkpoint {path} was not written by the reference trainer")
        for key, want in (
            ("lora_rank", cfg.lora_rank),
            ("resolution", cfg.work_resolution),
            ("image_channels", cfg.image_channels),
            ("base_model_seed", cfg.base_model_seed),
        ):
            if ts.get(key) != want:
                raise TrainerError(
                    f"checkpoint {path} is incompatible with the config: {key} {ts.get(key)} != {want}"
                )
        rs = _read_json(path / RANDOM_STATES_NAME, "checkpoint random state")
        try:
            opt_tensors = load_file(str(path / OPTIMIZER_NAME))
        except Exception as exc:  # safetensors raises several types
            raise TrainerError(f"checkpoint {path}: cannot read {OPTIMIZER_NAME}: {exc}") from None
        from safetensors import safe_open

        with safe_open(str(path / OPTIMIZER_NAME), framework="numpy") as fh:
            t = int((fh.metadata() or {}).get("t", ts["global_step"]))
        for k in sorted(state.params):
            for prefix, target in (("param.", state.params), ("exp_avg.", state.opt.m), ("exp_avg_sq.", state.opt.v)):
                arr = opt_tensors[prefix + k]
                if arr.shape != target[k].shape:
                    raise TrainerError(f"checkpoint {path}: tensor {prefix + k} has shape {arr.shape}")
                target[k] = np.array(arr, dtype=np.float64, copy=True)
        state.opt.t = t
        state.sampler.load_state(rs["sampler"])
        state.noise_rng.bit_generator.state = rs["noise"]
        state.step = int(ts["global_step"])
        state.loss_history = [float(x) for x in ts.get("loss_history", [])]
        state.train_seconds = float(ts.get("train_seconds", 0.0))
    except TrainerError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainerError(f"checkpoint {path} is corrupt: {type(exc).__name__}: {exc}") from None
    if ts.get("dataset_digest") != state.dataset_digest:
        warn(
            f"warning: dataset contents differ from checkpoint {path.name}; "
            "the resumed run will not match an uninterrupted one"
        )


# --------------------------------------------------------------------------- run


class Reporter:
    def __init__(self, out: TextIO, err: TextIO):
        self.out = out
        self.err = err
        self._out_ok = True

    def line(self, text: str) -> None:
        if not self._out_ok:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):  # parent went away; keep training
            self._out_ok = False

    def warn(self, text: str) -> None:
        try:
            self.err.write(text + "\n")
            self.err.flush()
        except (OSError, ValueError):
            pass


def _should_log(cfg: TrainConfig, step: int, first_step: int) -> bool:
    total = cfg.max_train_steps
    every = cfg.logging_steps or max(1, total // 200)
    every = min(every, max(1, total // 20))  # at least every 5%
    return step == first_step or step == total or step % every == 0 or (
        cfg.checkpointing_steps > 0 and step % cfg.checkpointing_steps == 0
    )


def train(cfg: TrainConfig, dataloader_path: Path, output_dir: Path, rep: Reporter) -> dict[str, Any]:
    t_start = time.monotonic()
    rep.line(format_stage("loading_dataset"))
    backends = load_dataloader(dataloader_path)
    items = collect_dataset(backends, dataloader_path.parent)
    data, items = load_images(items, cfg.work_resolution, cfg.image_channels, rep.warn)
    _check_cancel()
    if cfg.resolution > cfg.work_resolution:
        rep.line(
            f"note: resolution {cfg.resolution} downsampled to {cfg.work_resolution} for the reference trainer"
        )
    rep.line(
        f"note: {len(items)} images ({len({i.path for i in items})} files) from "
        f"{len({i.backend_id for i in items})} backend(s), {data.shape[1]} features each"
    )

    rep.line(format_stage("preparing"))
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainerError(f"cannot create output_dir {output_dir}: {exc}") from None
    if not output_dir.is_dir():
        raise TrainerError(f"output_dir is not a directory: {output_dir}")
    cleanup_stale_temp(output_dir)
    resume_path = resolve_resume_path(cfg, output_dir)
    if cfg.resume_from_checkpoint and cfg.resume_from_checkpoint.lower() == "latest" and resume_path is None:
        rep.line(f"note: no checkpoint found in {output_dir}; starting from step 0")

    w0_t = np.ascontiguousarray(make_base(cfg).T)
    params = init_adapter(cfg)
    state = TrainState(
        step=0,
        params=params,
        opt=AdamW(params, cfg),
        sampler=BatchSampler(data.shape[0], np.random.default_rng([cfg.seed, 0x5A3D])),
        noise_rng=np.random.default_rng([cfg.seed, 0x401E]),
        loss_history=[],
        train_seconds=0.0,
        dataset_digest=hashlib.sha256(data.tobytes()).hexdigest(),
        num_images=int(data.shape[0]),
    )
    if resume_path is not None:
        load_checkpoint(resume_path, state, cfg, rep.warn)
        rep.line(format_resumed(str(resume_path), state.step))
    elif cfg.init_lora_weights:
        load_initial_weights(Path(cfg.init_lora_weights), state.params)
        rep.line(f"note: initial LoRA weights from {cfg.init_lora_weights}")
    _check_cancel()

    rep.line(format_stage("training"))
    scale = cfg.alpha / cfg.lora_rank

    def render_sample(params: dict[str, np.ndarray]) -> bytes:
        return samples.render(params, w0_t, data, scale=scale, noise_std=cfg.noise_std, seed=cfg.seed,
                              resolution=cfg.work_resolution, channels=cfg.image_channels)

    total = cfg.max_train_steps
    first_step = state.step + 1
    seg_start = time.monotonic()
    seg_base = state.train_seconds
    bs = cfg.train_batch_size
    steps_run = 0
    last_saved = state.step  # 0, or the checkpoint this run resumed from
    try:
        while state.step < total:
            _check_cancel()
            step = state.step + 1
            idx = state.sampler.next_batch(bs)
            x = data[idx]
            xn = x + cfg.noise_std * state.noise_rng.standard_normal(x.shape) if cfg.noise_std else x
            loss, grads = forward_backward(state.params, w0_t, x, xn, scale)
            if not math.isfinite(loss):
                raise TrainerError(f"training diverged (loss={loss}) at step {step}; lower learning_rate")
            lr = learning_rate_at(cfg, step)
            state.opt.step(state.params, grads, lr)
            state.step = step
            state.loss_history.append(loss)
            state.train_seconds = seg_base + (time.monotonic() - seg_start)
            steps_run += 1
            if _should_log(cfg, step, first_step):
                rep.line(format_progress(step, total, loss, lr))
            if cfg.checkpointing_steps and step % cfg.checkpointing_steps == 0:
                path = save_checkpoint(output_dir, state, cfg, sample=render_sample(state.params))
                rep.line(format_checkpoint(str(path)))
                prune_checkpoints(output_dir, cfg.checkpoints_total_limit)
                last_saved = step
            if cfg.step_delay_seconds and state.step < total:
                _sleep(cfg.step_delay_seconds)
    except Cancelled:
        # Stopping between steps: the state is consistent, so it can be saved exactly.
        if cfg.checkpoint_on_cancel and state.step > last_saved:
            path = save_checkpoint(output_dir, state, cfg, sample=render_sample(state.params))
            rep.line(format_checkpoint(str(path)))
            prune_checkpoints(output_dir, cfg.checkpoints_total_limit)
        raise
    if steps_run == 0 and state.loss_history:
        rep.line(format_progress(state.step, total, state.loss_history[-1], learning_rate_at(cfg, state.step)))
    _check_cancel()

    rep.line(format_stage("saving"))
    weights_path = output_dir / WEIGHTS_NAME
    tmp_weights = output_dir / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
    save_adapter(tmp_weights, state.params, cfg, state.step)
    _fsync_path(tmp_weights)
    os.replace(tmp_weights, weights_path)
    hist = state.loss_history
    k = min(10, len(hist))
    duration = time.monotonic() - t_start
    summary = {
        "trainer": TRAINER_FORMAT,
        "status": "completed",
        "steps": state.step,
        "max_train_steps": total,
        "steps_this_run": steps_run,
        "resumed_from": str(resume_path) if resume_path else None,
        "final_loss": hist[-1] if hist else None,
        "final_loss_avg10": sum(hist[-k:]) / k if k else None,
        "initial_loss": hist[0] if hist else None,
        "initial_loss_avg10": sum(hist[:k]) / k if k else None,
        "duration_seconds": round(duration, 4),
        "train_seconds_total": round(state.train_seconds, 4),
        "steps_per_second": round(steps_run / max(1e-9, time.monotonic() - seg_start), 2) if steps_run else None,
        "seed": cfg.seed,
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.alpha,
        "learning_rate": cfg.learning_rate,
        "train_batch_size": bs,
        "resolution": cfg.work_resolution,
        "image_channels": cfg.image_channels,
        "num_images": state.num_images,
        "epochs": state.sampler.epoch,
        "weights": str(weights_path),
        "output_dir": str(output_dir),
        "checkpoints": [str(p) for _, p in _list_checkpoints(output_dir)],
        "loss_history": hist,
        "config": asdict(cfg),
    }
    _write_text_atomic(output_dir / SUMMARY_NAME, json.dumps(summary, indent=2))
    rep.line(format_stage("done"))
    return summary


class _ArgParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise TrainerError(f"{message} (usage: python -m stcloud.trainer --config CONFIG "
                           "[--dataloader FILE] [--output-dir DIR])")


def build_arg_parser() -> argparse.ArgumentParser:
    p = _ArgParser(
        prog="python -m stcloud.trainer",
        description="stcloud reference LoRA trainer (numpy, CPU). See stcloud/trainer/__init__.py.",
    )
    p.add_argument("--config", help="SimpleTuner-style config.json")
    p.add_argument("--dataloader", help="SimpleTuner dataloader (multidatabackend) JSON; overrides data_backend_config")
    p.add_argument("--output-dir", help="overrides output_dir from the config")
    p.add_argument("--resume-from-checkpoint", help="overrides resume_from_checkpoint ('latest', a path, or 'none')")
    return p


def resolve_inputs(args: argparse.Namespace) -> tuple[TrainConfig, Path, Path]:
    raw: dict[str, Any] = {}
    config_dir = Path.cwd()
    if args.config:
        config_path = Path(args.config).expanduser()
        raw = _read_json(config_path, "config file")
        if not isinstance(raw, dict):
            raise TrainerError(f"config file {config_path} must contain a JSON object")
        config_dir = config_path.resolve().parent
    cfg = parse_config(raw)
    if args.resume_from_checkpoint is not None:
        cfg.resume_from_checkpoint = _to_str("resume_from_checkpoint", args.resume_from_checkpoint)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.dataloader:
        dataloader_path = Path(args.dataloader).expanduser()
    elif cfg.data_backend_config:
        dataloader_path = Path(cfg.data_backend_config).expanduser()
        if not dataloader_path.is_absolute():
            dataloader_path = config_dir / dataloader_path
    else:
        raise TrainerError("no dataloader: pass --dataloader FILE or set data_backend_config in the config")
    dataloader_path = dataloader_path.resolve()
    output_dir = Path(cfg.output_dir).expanduser().resolve()
    return cfg, dataloader_path, output_dir


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
         install_signals: bool = True) -> int:
    rep = Reporter(stdout or sys.stdout, stderr or sys.stderr)
    previous = _cancel.install() if install_signals else {}
    try:
        args = build_arg_parser().parse_args(argv)
        cfg, dataloader_path, output_dir = resolve_inputs(args)
        _check_cancel()
        train(cfg, dataloader_path, output_dir, rep)
        return EXIT_OK
    except Cancelled as exc:
        rep.line(format_stage("cancelled"))
        return 128 + exc.signum
    except TrainerError as exc:
        rep.warn(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        rep.line(format_stage("cancelled"))
        return 130
    except MemoryError:
        rep.warn("error: out of memory (lower resolution, lora_rank or train_batch_size)")
        return EXIT_INTERNAL
    except Exception as exc:  # a bug, not bad input: keep the traceback for diagnosis
        rep.warn(traceback.format_exc().rstrip())
        rep.warn(f"error: internal error: {type(exc).__name__}: {exc}")
        return EXIT_INTERNAL
    finally:
        if install_signals:
            _cancel.restore(previous)
