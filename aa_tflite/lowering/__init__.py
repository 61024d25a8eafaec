"""Lowerings (schema only): each writes one class of activation tensor below 8 bits with no
extra op."""
