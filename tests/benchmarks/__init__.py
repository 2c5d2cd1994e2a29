"""Benchmarks of the uploader against the seed design; run them all with ``scripts/bench.py``.

Not collected by the normal test run (pytest's addopts ignore this folder): figures come from a
benchmark run that prints them, never from timed unit tests.
"""
