"""Batched sampling with a KV cache (the package is `generation` so that
`findap_jax.generate` stays the public function)."""
