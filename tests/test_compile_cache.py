"""run.compilation_cache: a second trainer in the same directory loads its compiled steps
from disk instead of compiling them."""
import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

from findap_jax.compile_cache import use_compilation_cache
from findap_jax.train.trainer import Trainer

from .train.test_trainer import _cfg

HIT, MISS = "/jax/compilation_cache/cache_hits", "/jax/compilation_cache/cache_misses"


@pytest.fixture
def events():
    """Cache hit/miss events; the process's cache settings restored afterwards."""
    seen = []
    listener = lambda name, **_: seen.append(name) if name in (HIT, MISS) else None  # noqa: E731
    jax.monitoring.register_event_listener(listener)
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)   # the tiny model compiles fast
    yield seen
    jax.monitoring.unregister_event_listener(listener)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before)
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()


def test_second_run_loads_compiled_steps(tiny_chat_model, tmp_path, events):
    over = {"train.steps": "2", "run.compilation_cache": str(tmp_path / "cache")}
    Trainer(_cfg("configs/sft.py", tiny_chat_model, **over), tmp_path / "a", log=lambda *_: None).run()
    written = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert written and events.count(MISS) >= 1 and events.count(HIT) == 0, (written, events)
    events.clear()
    # a new trainer traces and lowers its own step again; the executable comes from disk
    Trainer(_cfg("configs/sft.py", tiny_chat_model, **over), tmp_path / "b", log=lambda *_: None).run()
    assert events.count(HIT) >= 1 and sorted(p.name for p in (tmp_path / "cache").iterdir()) == written, events


def test_empty_path_leaves_jax_alone(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    assert not use_compilation_cache("")
    assert jax.config.jax_compilation_cache_dir == before
