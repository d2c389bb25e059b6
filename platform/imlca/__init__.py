"""imlca: class-incremental learning with Incremental backbone Merging + Local Classifier Alignment, on Ray."""
__version__ = "0.1.0"
