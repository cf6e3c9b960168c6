"""Benchmarks (not tests). Each ``bench/*_bench.py`` measures stcloud next to a peer in the
same run and prints the ratio. Run them all with ``python -m bench`` (``make bench``)."""
