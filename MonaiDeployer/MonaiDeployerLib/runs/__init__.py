"""The Python API: ``Runner`` (one warm worker) and its runs, and what a killed run leaves behind."""
