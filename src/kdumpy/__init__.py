"""kdumpy: the userspace of Linux kdump, in Python."""

__version__ = "0.1.0"
