"""What Slicer's panel decides and shows without Qt: the checks before a run, the info card, background work."""
