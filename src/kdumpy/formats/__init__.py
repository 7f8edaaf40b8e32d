"""Dump file formats: bytes to records and back, nothing else."""
