"""Test-session settings: JAX's persistent compilation cache, so that a second `make test` reuses the first's
compiled programs (the cache lives in .jax_cache/, ignored by git; delete it to measure a cold run)."""

import pathlib

import jax

jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
