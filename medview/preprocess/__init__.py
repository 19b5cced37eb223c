"""Preprocessing shared by the app's pipelines and by training (numpy only, no torch, no Qt).

What a paper fixes about the input (HU windows, resizing, min-max normalisation,
the log-mel front end, segment padding, slice grouping) lives here once, so a
bundle sees at inference exactly what it saw in training.
"""
