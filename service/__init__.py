"""Processes kuiperd never loads: the network service and the camera bridge.

They import the plugin's modules (the zip's top level); the plugin never imports them,
and they are not in the zip (tests/test_layout.py holds both rules).
"""
