"""Ready-to-run recipes: reference models trained offline and deterministically, and builders of
ImageNet-scale architectures with random weights for scale tests."""
