"""Harnesses shared by tests (never import a test module from another test)."""
