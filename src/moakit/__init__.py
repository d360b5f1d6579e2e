"""moakit: mechanism-of-action prediction from cell profiles (the 1st-place lish-moa solution)."""

__version__ = "0.1.0"
