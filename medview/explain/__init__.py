"""Explanations (Grad-CAM, saliency) computed on the torch side; results are numpy arrays."""
