"""What runs in the worker process: its request loop and one backend per package kind."""
