"""Prefect tasks, one module per stage: resolve inputs, call the library, log outputs."""
