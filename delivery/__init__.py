"""Solidarity Delivery: campaign messages carried the last mile, with proof."""

__version__ = "0.1.0"
