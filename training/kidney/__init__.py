"""Paper 000: kidney-stone hybrid CNN (frozen ImageNet branch + custom CNN) and its transfer-learning baseline."""
