"""The crashed kernel's memory, whatever file it came in."""
