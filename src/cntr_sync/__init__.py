"""cntr-sync: keep a local directory mirrored into an OpenAI container."""

__version__ = "0.1.0"
