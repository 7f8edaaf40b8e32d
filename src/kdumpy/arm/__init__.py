"""The running system, before a crash: crashkernel= (crashkernel), loading the capture kernel (kexec),
preflight checks (checks), the panic policy (panic), status (status) and the bootloader drop-in
(bootloader). Every OS path goes through a `Root` (root), so all of it runs against a directory tree
in tests.
"""
