"""refine: a RefinedWeb-style web-corpus refinery."""

__version__ = "0.1.0"
