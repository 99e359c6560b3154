"""The model service kuiperd never loads: HTTP and gRPC over the pure layer (core/ and the model modules).

It imports no eKuiper SDK and nothing of runtime/; the plugin never imports it, and it is not in the
plugin's zip (tests/unit/test_layout.py holds these rules). The camera bridge is camera/, its own folder.
"""
