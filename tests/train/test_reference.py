"""Precomputed reference log-prob tables: reused only for the model they were computed with."""


def test_a_reference_table_is_reused_only_for_its_own_model(tmp_path, monkeypatch):
    """Pair keys hash tokens only: another start model's table must be recomputed, not read."""
    import json

    from findap_jax.train import reference
    calls = []

    def compute(model, data_cfg, shard, multiple, mesh=None):
        calls.append(model)
        return {"pair": [float(model), -1.0]}
    monkeypatch.setattr(reference, "compute_table", compute)
    path, logs = tmp_path / "reference_logps.0.json", []
    assert reference.load_or_compute(path, 1, None, (0, 1), 0, "model A", log=logs.append) == {"pair": [1.0, -1.0]}
    assert reference.load_or_compute(path, 2, None, (0, 1), 0, "model A", log=logs.append) == {"pair": [1.0, -1.0]}
    assert reference.load_or_compute(path, 3, None, (0, 1), 0, "model B", log=logs.append) == {"pair": [3.0, -1.0]}
    path.write_text(json.dumps({"pair": [9.0, 9.0]}))   # a table written before fingerprints were kept
    assert reference.load_or_compute(path, 4, None, (0, 1), 0, "model B", log=logs.append) == {"pair": [4.0, -1.0]}
    assert calls == [1, 3, 4] and len(logs) == 2 and "computing it again" in logs[0]
