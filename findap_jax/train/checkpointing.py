"""Orbax checkpoints of the train state, with the data position and the config beside it.

Layout: workdir/checkpoints/<step>/{state, data} written atomically by orbax (a save in
progress lives in <step>.orbax-checkpoint-tmp, removed at the next start), workdir/config.json
once per run. A <step> dir without orbax's commit marker (a half-copied workdir) is renamed
<step>.incomplete, never restored. Restores take abstract arrays that carry the target
shardings, so a run can resume on a different mesh or device count.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from findap_jax.files import write_text_atomic
from findap_jax.train.step import TrainState


# Written by orbax (>= 0.12) as the last file of every save, before the atomic rename.
COMMIT_MARKER = "commit_success.txt"


def set_aside_incomplete(ckpt_dir: Path, log=print) -> list[Path]:
    """Rename step dirs that lack the commit marker to <step>.incomplete (kept, not listed)."""
    moved = []
    if not ckpt_dir.is_dir():
        return moved
    for d in sorted(ckpt_dir.iterdir()):
        if d.name.isdigit() and d.is_dir() and not (d / COMMIT_MARKER).exists():
            dst, n = d.with_name(f"{d.name}.incomplete"), 1
            while dst.exists():
                dst, n = d.with_name(f"{d.name}.incomplete{n}"), n + 1
            d.rename(dst)
            log(f"{d}: no {COMMIT_MARKER}, an incomplete checkpoint; moved to {dst.name}, not resumed from")
            moved.append(dst)
    return moved


class Checkpointer:
    def __init__(self, workdir: str | Path, *, keep: int = 3, async_save: bool = True, log=print):
        self.dir = Path(workdir).absolute() / "checkpoints"
        if jax.process_index() == 0:
            set_aside_incomplete(self.dir, log)
        if jax.process_count() > 1:   # the others list the steps only after the rename
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("findap_jax:checkpoints_scanned")
        # cleanup_tmp_directories: a save cut short by kill -9 leaves <step>.orbax-checkpoint-tmp.
        # keep <= 0: every checkpoint (orbax's max_to_keep=0 would delete each one as it is saved)
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep if keep > 0 else None, create=True,
                                            cleanup_tmp_directories=True,
                                            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.dir, options=opts)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, data_state: dict, force: bool = False) -> bool:
        tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state}
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(tree), data=ocp.args.JsonSave(data_state)), force=force)

    def restore(self, step: int, abstract: TrainState) -> tuple[TrainState, dict]:
        target = {"step": abstract.step, "params": abstract.params, "opt_state": abstract.opt_state}
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged trees
            raise ValueError(f"{self.dir / str(step)}: cannot restore checkpoint: {e}") from e
        tree = out["state"]
        return TrainState(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"]), dict(out["data"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: TrainState) -> TrainState:
    """ShapeDtypeStructs with the shardings of a live (freshly initialised) state."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def write_config(workdir: str | Path, config_json: str) -> None:
    json.loads(config_json)  # must be valid JSON
    write_text_atomic(Path(workdir) / "config.json", config_json)
