"""edgevid: video action recognition models, compressed, exported and run on the edge."""

__version__ = "0.1.0"
