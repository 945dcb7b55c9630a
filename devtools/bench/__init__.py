"""``make bench``: the suite's throughput and latency against the hardware's floor.

``python -m devtools.bench`` starts the embedded stack, measures every figure of
docs/performance.md in one run on this machine, prints one table and writes it
(with the raw numbers) under ``bench/results/``.
"""
