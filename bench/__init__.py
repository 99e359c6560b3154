"""`make bench`: the measurements, run as modules from the repo root (`python -m bench.run`, ...).

Each writes its numbers to build/<name>.json (bench/report.py); bench/pages.py turns them into
docs/benchmarks.md and the charts under docs/bench/.
"""
