"""lm-evaluation-harness (HF backend) as the reference scorer for log-likelihood multiple
choice: a local task YAML over the same FLARE jsonl, the same chat template, zero-shot."""
from __future__ import annotations

import os
from pathlib import Path

TASK_YAML = """task: findap_ref_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {rows}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def lm_eval_mc(gguf_path: Path, rows_file: Path, workdir: Path, limit: int | None = None,
               batch_size: int = 8, timing: dict | None = None) -> list[dict]:
    """Per-document {"doc_id", "lls", "pred", "acc"} from lm-eval on a FLARE jsonl file.
    `timing["seconds"]` receives the evaluation time (model loading excluded)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import time

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    task_dir = Path(workdir) / "lm_eval_tasks"
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "findap_ref_mc.yaml").write_text(TASK_YAML.format(rows=str(rows_file)))
    lm = HFLM(pretrained=str(Path(gguf_path).parent), gguf_file=Path(gguf_path).name, dtype="float32",
              device="cpu", batch_size=batch_size)
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["findap_ref_mc"], task_manager=TaskManager(include_path=str(task_dir)),
        num_fewshot=0, apply_chat_template=True, batch_size=batch_size, limit=limit,
        log_samples=True)
    if timing is not None:
        timing["seconds"] = time.perf_counter() - t0
    docs = []
    for s in sorted(out["samples"]["findap_ref_mc"], key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        docs.append({"doc_id": s["doc_id"], "lls": lls, "pred": max(range(len(lls)), key=lls.__getitem__),
                     "acc": float(s["acc"])})
    return docs
