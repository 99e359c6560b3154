"""What the tests (and the bench) share: fixture paths, images, answers, plugin calls and statistics.

The process drivers (kuiperd, mosquitto, the camera bridge), the waits and free ports are tools/'s:
the demos use them too, and tools/ imports nothing of tests/. Imported as `tests.support.<module>`
with the repo root on sys.path (pytest.ini's `pythonpath`, `python -m bench.<name>`); no test
imports another test file.
"""
