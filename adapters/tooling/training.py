"""LoRA training on a chat dataset with peft, on CPU or GPU, deterministic for a seed.

``train_lora`` writes a registry-ready adapter folder:

- ``adapter_model.safetensors`` and ``adapter_config.json`` (PEFT LoRA format, with
  ``base_model_name_or_path``, ``r``, ``lora_alpha`` and ``target_modules``);
- ``loragate_training.json``: how it was made (dataset hash, the base model's path,
  content hash and the registry's shape fingerprint, settings, losses, duration).

The folder appears whole or not at all: it is written to a hidden temporary sibling
and renamed at the end, so a crash or an interrupt never leaves half an adapter.

Evaluation split: ``eval_count(n, eval_fraction)`` examples are held out, chosen with
the seed. With fewer than 4 examples nothing is held out; otherwise
``max(1, floor(n * eval_fraction))``; ``eval_fraction=0`` turns evaluation off.

Only the assistant turns are learned (see ``adapters.tooling.chat_encoding``). Weights train
in float32; the data order depends only on the seed, and the global torch RNG state
of the caller is left untouched.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.base_model import BaseModelSpec
from adapters.common.atomic_dir import atomic_directory
from adapters.tooling.chat_encoding import IGNORE_INDEX, ChatEncodingError, EncodedChat, encode_chat
from adapters.tooling.content_hash import model_content_hash
from adapters.tooling.dataset import ChatDataset, DatasetError, DatasetIssue, load_dataset

METADATA_FILE = "loragate_training.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
METADATA_VERSION = 1
MIN_EXAMPLES_FOR_EVAL = 4
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


class TrainingError(RuntimeError):
    """Training cannot start or finish (bad settings, unusable data or base model)."""


@dataclass(frozen=True)
class TrainingResult:
    """What ``train_lora`` produced; ``metadata`` is the content of ``loragate_training.json``."""

    adapter_dir: Path
    final_train_loss: float
    eval_loss: float | None
    initial_eval_loss: float | None
    num_train: int
    num_eval: int
    steps: int
    duration_s: float
    metadata: dict[str, Any]


def eval_count(num_examples: int, eval_fraction: float) -> int:
    """How many examples are held out for evaluation (rule in the module docstring)."""
    if eval_fraction <= 0 or num_examples < MIN_EXAMPLES_FOR_EVAL:
        return 0
    return max(1, math.floor(num_examples * eval_fraction))


def train_lora(
    base_dir: Path | str,
    dataset: ChatDataset | Path | str,
    out_dir: Path | str,
    *,
    rank: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] = ATTENTION_MODULES,
    steps: int = 60,
    learning_rate: float = 1e-3,
    batch_size: int = 2,
    max_length: int = 1024,
    seed: int = 0,
    eval_fraction: float = 0.1,
    num_threads: int | None = None,
    progress: bool = True,
    progress_position: int = 0,
) -> TrainingResult:
    """Train a LoRA adapter for the model in ``base_dir`` and write it to ``out_dir``.

    ``out_dir`` must not exist yet (``FileExistsError``). Raises ``DatasetError`` for an
    invalid dataset (also for examples too long for ``max_length`` tokens) and
    ``TrainingError`` for invalid settings or a base model LoRA cannot be applied to.

    ``num_threads`` sets torch's intra-op threads while training (process-wide; the
    previous value is restored). On a small, busy CPU one thread per training process
    is much faster than threads that wait on each other. ``progress_position`` is the
    tqdm bar's line, for several trainings shown at once.
    """
    import torch

    started = time.monotonic()
    base_dir = Path(base_dir).resolve()
    out_dir = Path(out_dir)
    _check_settings(
        rank, alpha, target_modules, steps, learning_rate, batch_size, eval_fraction, num_threads
    )
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists")
    data = dataset if isinstance(dataset, ChatDataset) else load_dataset(dataset)

    rng = random.Random(seed)  # the only source of data order: split, then batches
    indices = list(range(len(data)))
    rng.shuffle(indices)
    n_eval = eval_count(len(data), eval_fraction)
    eval_idx, train_idx = sorted(indices[:n_eval]), sorted(indices[n_eval:])
    batch_size = min(batch_size, len(train_idx))

    with _torch_threads(num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # LoRA A matrices are initialised from torch's RNG
        model, tokenizer = _load_model(base_dir, rank, alpha, target_modules)
        encoded = _encode_all(tokenizer, data, max_length)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_set = [encoded[i] for i in train_idx]
        eval_set = [encoded[i] for i in eval_idx]
        initial_eval = _mean_loss(model, eval_set, pad_id, batch_size) if eval_set else None
        history = _train(
            model,
            train_set,
            pad_id,
            rng,
            steps=steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            progress=progress,
            progress_position=progress_position,
            desc=f"LoRA {out_dir.name}",
        )
        final_train = _mean_loss(model, train_set, pad_id, batch_size)
        final_eval = _mean_loss(model, eval_set, pad_id, batch_size) if eval_set else None

    duration = round(time.monotonic() - started, 2)
    metadata: dict[str, Any] = {
        "format_version": METADATA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model_path": str(base_dir),
        "base_model_fingerprint": model_content_hash(base_dir),
        "base_model_shape_fingerprint": BaseModelSpec.from_directory(base_dir).fingerprint,
        "dataset_path": data.source,
        "dataset_sha256": data.sha256,
        "num_examples": len(data),
        "num_train": len(train_set),
        "num_eval": len(eval_set),
        "eval_lines": [data.examples[i].line for i in eval_idx],
        "rank": rank,
        "alpha": alpha,
        "target_modules": sorted(target_modules),
        "steps": steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "eval_fraction": eval_fraction,
        "final_train_loss": final_train,
        "eval_loss": final_eval,
        "initial_eval_loss": initial_eval,
        "loss_history": [round(loss, 5) for loss in history],
        "duration_s": duration,
        "versions": _versions(),
    }
    _write_adapter(model, out_dir, target_modules, metadata)
    return TrainingResult(
        adapter_dir=out_dir,
        final_train_loss=final_train,
        eval_loss=final_eval,
        initial_eval_loss=initial_eval,
        num_train=len(train_set),
        num_eval=len(eval_set),
        steps=steps,
        duration_s=duration,
        metadata=metadata,
    )


def _encode_all(tokenizer: Any, data: ChatDataset, max_length: int) -> list[EncodedChat]:
    """Encode every example; examples the tokenizer cannot encode are dataset errors."""
    encoded, issues = [], []
    for example in data:
        try:
            encoded.append(encode_chat(tokenizer, example.to_dicts(), max_length=max_length))
        except ChatEncodingError as exc:
            issues.append(DatasetIssue(example.line, str(exc)))
    if issues:
        raise DatasetError(data.source, issues)
    return encoded


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_settings(
    rank: int,
    alpha: int,
    target_modules: Sequence[str],
    steps: int,
    learning_rate: float,
    batch_size: int,
    eval_fraction: float,
    num_threads: int | None,
) -> None:
    problems = []
    if rank < 1:
        problems.append(f"rank must be >= 1, got {rank}")
    if alpha <= 0:
        problems.append(f"alpha must be > 0, got {alpha}")
    if isinstance(target_modules, str) or not target_modules:
        problems.append("target_modules must be a non-empty sequence of module names")
    if steps < 1:
        problems.append(f"steps must be >= 1, got {steps}")
    if not learning_rate > 0:
        problems.append(f"learning_rate must be > 0, got {learning_rate}")
    if batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= eval_fraction < 1:
        problems.append(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if num_threads is not None and num_threads < 1:
        problems.append(f"num_threads must be >= 1, got {num_threads}")
    if problems:
        raise TrainingError("; ".join(problems))


def _load_model(base_dir: Path, rank: int, alpha: int, target_modules: Sequence[str]) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (base_dir / "config.json").is_file():
        raise TrainingError(f"{base_dir} is not a model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # e.g. a target module the base model does not have
        raise TrainingError(f"cannot apply LoRA to {base_dir}: {exc}") from exc
    return peft_model, tokenizer


def _batches(
    train_set: Sequence[EncodedChat], rng: random.Random, size: int
) -> Iterator[list[EncodedChat]]:
    """Endless batches: each epoch is a fresh seeded permutation of the training set."""
    pending: list[EncodedChat] = []
    while True:
        epoch = list(train_set)
        rng.shuffle(epoch)
        for item in epoch:
            pending.append(item)
            if len(pending) == size:
                yield pending
                pending = []


def _collate(batch: Sequence[EncodedChat], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(item.input_ids) for item in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _train(
    model: Any,
    train_set: Sequence[EncodedChat],
    pad_id: int,
    rng: random.Random,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    progress: bool,
    progress_position: int,
    desc: str,
) -> list[float]:
    import torch
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 10)

    def lr_factor(step: int) -> float:  # linear warm-up, then linear decay to 10 %
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 - 0.9 * (step - warmup) / max(1, steps - warmup)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    history: list[float] = []
    batches = _batches(train_set, rng, batch_size)
    with tqdm(
        total=steps,
        desc=desc,
        unit="step",
        disable=not progress,
        leave=False,
        position=progress_position,
    ) as bar:
        for _ in range(steps):
            loss = model(**_collate(next(batches), pad_id)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            history.append(float(loss.detach()))
            bar.set_postfix(loss=f"{history[-1]:.3f}")
            bar.update()
    model.eval()
    return history


def _mean_loss(model: Any, items: Sequence[EncodedChat], pad_id: int, batch_size: int) -> float:
    """Token-weighted mean cross-entropy over the learned tokens of ``items``."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch = _collate(items[start : start + batch_size], pad_id)
            tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * tokens
            count += tokens
    return round(total / count, 6)


def _write_adapter(
    model: Any, out_dir: Path, target_modules: Sequence[str], metadata: dict[str, Any]
) -> None:
    """Write the adapter files, all at once (see ``atomic_directory``)."""
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
        config_path = tmp / ADAPTER_CONFIG_FILE
        config = json.loads(config_path.read_text())
        # peft stores target_modules as a set: sort it so the file is the same every run.
        config["target_modules"] = sorted(target_modules)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if not (tmp / ADAPTER_WEIGHTS_FILE).is_file():
            raise TrainingError(f"peft did not write {ADAPTER_WEIGHTS_FILE}")
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
