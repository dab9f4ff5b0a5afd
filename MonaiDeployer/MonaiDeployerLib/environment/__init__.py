"""Where a package runs: the requirements a worker's Python must meet, environments made for packages,
container runtimes and GPUs, and MonaiDeployer's own folder."""
