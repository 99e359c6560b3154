"""What tests, the bench and the demos share: paths, processes, waits, images and statistics.

Imported as `tests.support.<module>` with the repo root on sys.path (pytest.ini's `pythonpath`,
`python -m bench.<name>`); no test imports another test file.
"""
