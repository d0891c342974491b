"""Scenes: loading and validating nerfstudio-format data, sparse-view splits, rendering real scenes with
Blender, importers for real posed data, and the bundled scene."""
