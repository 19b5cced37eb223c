"""MedView: an offline viewer for CT, lung sounds and skin photos with embedded AI."""

__version__ = "0.1.0"
