"""kdump as a service: the settings file (config), and later the capture side and dump targets."""
