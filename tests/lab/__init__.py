"""The lab's tests: real Debian kernels in QEMU."""
