"""Helpers shared by the whole package and not part of its public API: argument checks, registries,
file writing, the container file format, text tables and the map of moved import paths."""
__all__: list[str] = []
