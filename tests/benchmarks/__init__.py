"""Benchmarks of the uploader against the seed design (``seed_logger.py``), on moto and Ceph RGW;
run them all with ``tests/benchmarks/run.py``.

Not collected by the normal test run (pytest's addopts ignore this folder): figures come from a
benchmark run that prints them, never from timed unit tests.
"""
