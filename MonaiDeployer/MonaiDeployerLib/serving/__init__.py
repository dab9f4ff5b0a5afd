"""Remote inference: the v2 protocol, a Triton server over packages (``serve``), and its client (``--server``)."""
