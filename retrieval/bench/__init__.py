"""Retrieval benchmarks (not tests): ``python -m retrieval.bench --help``.

See ``retrieval/bench/README.md`` for the corpus installation and the last results.
"""
