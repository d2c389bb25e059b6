"""What a finished run leaves for people: resolved config, results, accuracy matrices as CSV, final adapter and
heads as safetensors (`adapter.safetensors`: the run's final weights, SLCA's whole backbone). Written from a run's
result or from its last task checkpoint (same files either way)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from imlca.config import ExperimentConfig, save_config, to_dict
from imlca.core.metrics import summary
from imlca.engine.family import central_class

if TYPE_CHECKING:
    from imlca.engine.protocol import RunResult

Tensors = dict[str, torch.Tensor]


def accuracy_csv(acc: list[list[float]]) -> str:
    """Row t = after task t, column j = task j (blank above the diagonal)."""
    width = len(acc)
    lines = ["after_task," + ",".join(f"task_{j}" for j in range(width))]
    for t, row in enumerate(acc):
        lines.append(f"{t}," + ",".join(f"{row[j]:.4f}" if j < len(row) else "" for j in range(width)))
    return "\n".join(lines) + "\n"


def unshared(tensors: Tensors) -> Tensors:
    """The tensors contiguous, each on memory of its own: one whose storage an earlier one already uses is copied
    (safetensors refuses to write shared memory; MOS's weights hold its first snapshot under two names)."""
    seen, out = set(), {}
    for key, value in tensors.items():
        value = value.contiguous()
        storage = value.untyped_storage().data_ptr()
        out[key] = value.clone() if storage in seen else value
        seen.add(storage)
    return out


def write_artifacts(out_dir: Path, cfg: ExperimentConfig, acc: dict[str, list[list[float]]], merged: Tensors,
                    heads: dict[str, list[torch.Tensor]], extra: dict | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    results = {"config": to_dict(cfg), "methods": list(acc), "acc": acc,
               "summary": {m: summary(rows) for m, rows in acc.items() if rows}, **(extra or {})}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    for method, rows in acc.items():
        (out_dir / f"accuracy_{method}.csv").write_text(accuracy_csv(rows))
    save_file(unshared(merged), str(out_dir / "adapter.safetensors"))
    save_file(unshared({f"{m}.{t}": h for m, hs in heads.items() for t, h in enumerate(hs)}),
              str(out_dir / "heads.safetensors"))


def write_run(out_dir: Path, cfg: ExperimentConfig, result: RunResult) -> None:
    """Artifacts of a finished run."""
    write_artifacts(out_dir, cfg, result.acc, result.merged, result.heads,
                    {"reports": result.reports, "seconds": result.seconds})


def export_checkpoint(folder: Path, cfg: ExperimentConfig, out_dir: Path) -> None:
    """Artifacts of the run whose latest task checkpoint is `folder`."""
    state = central_class(cfg).from_checkpoint(cfg, folder)
    write_artifacts(out_dir, cfg, state.acc, *state.final())
