"""The whole recipe in seconds on a tiny model (tests and smoke runs).

    findap-jax recipe --config=configs/recipes/tiny.py --config.model=TINY_MODEL_DIR --workdir DIR
"""
from findap_jax.recipe import recipe_config


def get_config(arg=None):
    del arg
    cfg = recipe_config()
    cfg.model = ""   # required: a tiny chat model directory (see tests/helpers.save_tiny_chat_model)
    cfg.eval.update(tasks="fpb,cfa_mini", limit=8, max_new_tokens=16)
    cfg.chat_check_tokens = 16
    for name, loss, mixture, lr in (("cpt_it", "lm", "findap_joint", 1e-3),
                                    ("cpt_it_2", "lm", "findap_it", 1e-3),
                                    ("rpo", "rpo", "findap_preference", 1e-4)):
        cfg[name].data.update(mixture=mixture, seq_len=128, batch_size=8)
        cfg[name].train.update(loss=loss, steps=3, lr=lr, warmup=0)
        cfg[name].run.update(log_every=1, checkpoint_every=1, eval_every=0, async_checkpoint=False)
        cfg[name].data.contamination.eval_tasks = "fpb,cfa_mini"
    cfg.rpo.data.pack = False
    cfg.distill.update(limit=2, k=2, max_new_tokens=16, judge_max_new_tokens=16, temperature=1.0,
                       verdict="rule")
    return cfg
