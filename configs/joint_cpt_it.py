"""FinDAP stage 1: joint CPT+IT on the bundled corpora (model and data sections)."""
from findap_jax import defaults


def get_config(arg=None):
    del arg
    import ml_collections
    return ml_collections.ConfigDict(dict(
        model=defaults.model_config(),
        data=defaults.data_config(),
    ))
