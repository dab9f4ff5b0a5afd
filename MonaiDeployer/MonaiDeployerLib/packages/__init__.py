"""A model package on disk or in an image registry: the kinds (one module each), what a package says about
itself, and whether the user trusts it. Nothing here imports numpy, torch or MONAI."""
