"""Bundles of the MONAI Model Zoo by name: its index as a catalogue, verified downloads into a cache that works
offline, and the package argument ``zoo:NAME[@VERSION]``."""
