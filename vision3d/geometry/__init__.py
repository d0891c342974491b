"""Geometry in torch: SO(3)/SE(3), cameras, weighted Procrustes / PnP / RANSAC, relative pose metrics.

One purpose per module (kornia style: pure functions over batched tensors, argument checks, differentiable
where it matters); see each module's docstring for its conventions.
"""

from vision3d.geometry.camera import (
    PIXEL_CENTRE,
    PinholeCamera,
    normalize_pixels,
    pixel_grid,
    project_points,
    scale_intrinsics,
    unit_depth_rays,
    unproject_depth,
    unproject_points,
)
from vision3d.geometry.metrics import (
    direction_error_deg,
    error_auc,
    relative_pose_errors,
    rotation_error_deg,
    translation_angle_error_deg,
)
from vision3d.geometry.pnp import dlt_pnp, refine_pnp, reprojection_errors, weighted_pnp
from vision3d.geometry.procrustes import weighted_procrustes
from vision3d.geometry.ransac import (
    RansacResult,
    ransac_pnp,
    ransac_pnp_batch,
    ransac_procrustes,
    weighted_ransac,
)
from vision3d.geometry.se3 import (
    invert_pose,
    make_pose,
    opencv_to_opengl,
    opengl_to_opencv,
    relative_pose,
    transform_points,
)
from vision3d.geometry.so3 import (
    random_rotation,
    rotation_6d_to_matrix,
    rotation_angle,
    skew,
    so3_exp,
    so3_log,
    svd_orthogonalize,
    vector_angle,
)

__all__ = [
    "PIXEL_CENTRE", "PinholeCamera", "normalize_pixels", "pixel_grid", "project_points", "scale_intrinsics", "unit_depth_rays", "unproject_depth",
    "unproject_points",
    "direction_error_deg", "error_auc", "relative_pose_errors", "rotation_error_deg", "translation_angle_error_deg",
    "dlt_pnp", "refine_pnp", "reprojection_errors", "weighted_pnp", "weighted_procrustes",
    "RansacResult", "ransac_pnp", "ransac_pnp_batch", "ransac_procrustes", "weighted_ransac",
    "invert_pose", "make_pose", "opencv_to_opengl", "opengl_to_opencv", "relative_pose", "transform_points",
    "random_rotation", "rotation_6d_to_matrix", "rotation_angle", "skew", "so3_exp", "so3_log",
    "svd_orthogonalize", "vector_angle",
]
