"""Paper 003: ImageNet CNN features + a random forest of 50 trees, benign vs malignant skin lesions."""
