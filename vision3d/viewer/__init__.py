"""nerfstudio's viser viewer for our methods: extra scene content and checks of what it renders.

- :mod:`.frusta`: camera frusta sets (ir-nerf: estimated vs ground truth) in the viser scene.
"""
