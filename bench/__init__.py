"""Benchmarks that measure the targets of DESIGN.md ("Targets"); see bench/README.md.

Each benchmark is a module run with ``python -m bench.<name>``; it writes its figures as JSON and
a PNG plot under ``bench/results/``, which are committed.
"""
