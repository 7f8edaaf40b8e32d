"""Real Debian kernels in QEMU: build guests, boot, arm, crash, capture."""
