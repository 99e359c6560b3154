"""Demos and shell helpers for developers (never shipped in the plugin zip)."""
