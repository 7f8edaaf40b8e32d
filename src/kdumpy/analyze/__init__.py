"""Reading a dump: the kernel log (dmesg), the triage report with its crash signature, and drgn."""
