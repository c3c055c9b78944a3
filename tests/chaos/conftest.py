"""Chaos fixtures: the shared broker and models come from tests/conftest.py."""
