"""Training package: turns labelled data into the model bundles MedView loads (see issue: training)."""
