"""DET-GS: depth- and edge-aware regularization for sparse-view 3D Gaussian splatting.

- :mod:`.losses`: the method's losses (:class:`DetGSLossConfig`, hierarchical depth, edge-aware depth
  smoothness, RGB-guided TV, photometric and total) and the hard/soft depth-pass parameter helper.
- :mod:`.depth_priors`: depth priors from dataset files, an on-disk monocular network, or a seeded
  monocular-like distortion of ground-truth depth.
"""
