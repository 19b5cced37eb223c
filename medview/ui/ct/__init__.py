"""The CT workspace: slice and MPR views, the overlay layers, the study/tag/layer panels (``findings``: AI)."""
