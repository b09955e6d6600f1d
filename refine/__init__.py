"""refine: a RefinedWeb-style web-corpus refinery."""

__version__ = "0.1.0"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"  # every command's log lines, and the workers'
