"""The skin-lesion workspace: dropped photos, each classified benign / malignant with its saliency map."""
