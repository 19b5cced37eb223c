"""Shared training machinery: seeding, splits, loops, metrics, reports, plots."""
