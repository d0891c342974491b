"""RoMaP: part-level editing of Gaussian splats (3D-GALP part labels; editing to come, see docs/romap.md)."""
