"""IR-NeRF (Zhang et al., ICCV 2023): NeRF from unposed images with implicit pose regularisation.

Modules: ``pose_prior`` (prior sampler, 6D poses), ``field`` (coarse radiance field and rendering),
``networks`` (discriminator, pose estimator P, scene codebook), ``codebook_init``, ``losses``, ``training``
(the phase schedule), ``data`` (unposed images), ``evaluation`` (alignment, errors, frusta), ``cameras``
(estimated and ground-truth camera sets for the viewer), and the nerfstudio plugin (``config``, ``model``,
``dataparser``).
"""

from vision3d.methods.ir_nerf.cameras import estimated_and_gt_cameras

__all__ = ["estimated_and_gt_cameras"]
