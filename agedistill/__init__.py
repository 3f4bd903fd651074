"""agedistill: distil ordinal relation and dark knowledge into a compact facial-age student."""

__version__ = "0.1.0"
