"""Test-wide settings: property tests draw the same examples on every run."""

from hypothesis import settings

# Derandomized: a CI run is repeatable, and a failure found once is found again.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.load_profile("repeatable")
