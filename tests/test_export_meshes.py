"""Mesh extraction without a trained run: marching cubes of analytic SDFs, TSDF fusion of analytic renders, writers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from vision3d.errors import Vision3DError
from vision3d.export.marching_cubes import EmptyMeshError, sdf_to_mesh
from vision3d.export.mesh_io import format_summary, mesh_summary, write_mesh
from vision3d.export.tsdf import RenderedView, fuse_tsdf, world_to_camera_opencv
from vision3d.geometry.camera import PinholeCamera
from vision3d.geometry.se3 import opengl_to_opencv
from vision3d.metrics import mesh_chamfer_fscore

RADIUS = 0.5
CENTER = torch.tensor([0.1, -0.05, 0.2])
BOX = np.array([[-0.6, -0.7, -0.5], [0.8, 0.6, 0.9]])  # not a cube, not centred on the sphere


def sphere_sdf(points: torch.Tensor) -> torch.Tensor:
    return (points - CENTER.to(points)).norm(dim=-1) - RADIUS


def radii(mesh: trimesh.Trimesh) -> np.ndarray:
    return np.linalg.norm(mesh.vertices - CENTER.numpy(), axis=1)


def test_marching_cubes_of_a_sphere_lies_on_the_sphere():
    mesh = sdf_to_mesh(sphere_sdf, BOX, resolution=64)
    spacing = (BOX[1] - BOX[0]).max() / 63
    # Linear interpolation of an exact SDF along grid edges: measured max error 2.5e-4 (1% of a voxel).
    assert np.abs(radii(mesh) - RADIUS).max() < 0.05 * spacing
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.01)  # positive: normals point outwards
    assert np.all(mesh.bounds[0] >= BOX[0]) and np.all(mesh.bounds[1] <= BOX[1])


def test_slabs_and_chunks_give_the_unchunked_mesh():
    from scipy.spatial import cKDTree

    whole = sdf_to_mesh(sphere_sdf, BOX, resolution=48, slab_size=1000, chunk_size=1 << 22)
    slabs = sdf_to_mesh(sphere_sdf, BOX, resolution=48, slab_size=5, chunk_size=777)
    assert len(slabs.vertices) == len(whole.vertices) and len(slabs.faces) == len(whole.faces)
    assert slabs.is_watertight  # slabs are stitched: no crack along a shared plane
    # The same triangles, corner for corner and in the same winding: float32 SDF values may differ in the last
    # bit between batchings (measured 6e-8 here), nothing more.
    tri_whole, tri_slabs = whole.vertices[whole.faces], slabs.vertices[slabs.faces]  # [F, 3, 3]
    dist, match = cKDTree(tri_whole.mean(1)).query(tri_slabs.mean(1))
    assert len(np.unique(match)) == len(match) and dist.max() < 1e-6
    matched = tri_whole[match]
    same_winding = [np.abs(np.roll(matched, k, axis=1) - tri_slabs).max(axis=(1, 2)) for k in range(3)]
    assert np.min(same_winding, axis=0).max() < 1e-6


def test_vertex_colours_come_from_the_colour_callable():
    mesh = sdf_to_mesh(sphere_sdf, BOX, resolution=32, color=lambda p: (p[:, 2:3] > CENTER[2]).float().expand(-1, 3))
    upper = mesh.vertices[:, 2] > CENTER[2].item()
    colors = mesh.visual.vertex_colors[:, :3]
    assert np.all(colors[upper] == 255) and np.all(colors[~upper] == 0)


def test_a_box_without_zero_crossing_is_an_empty_level_set():
    with pytest.raises(EmptyMeshError, match="no zero level set"):
        sdf_to_mesh(lambda p: p.norm(dim=-1) + 0.1, BOX, resolution=16)


class SphereModule(torch.nn.Module):
    """An SDF with a parameter: its device decides where the grid is evaluated."""

    def __init__(self):
        super().__init__()
        self.center = torch.nn.Parameter(CENTER.clone())

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        assert points.device == self.center.device
        return (points - self.center).norm(dim=-1) - RADIUS


def test_sdf_module_is_evaluated_on_its_device():
    mesh = sdf_to_mesh(SphereModule(), BOX, resolution=32, slab_size=9)
    assert np.abs(radii(mesh) - RADIUS).max() < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU evaluation path is not tested")
def test_sdf_on_cuda_gives_the_cpu_mesh():
    cpu = sdf_to_mesh(SphereModule(), BOX, resolution=32, slab_size=9)
    gpu = sdf_to_mesh(SphereModule().cuda(), BOX, resolution=32, slab_size=9)
    assert len(gpu.faces) == len(cpu.faces)
    assert np.abs(radii(gpu) - RADIUS).max() < 1e-3


def look_at_opengl(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """nerfstudio c2w [4, 4] (OpenGL: camera looks along -z, y up) at ``eye`` looking at ``target``, world z up."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, up, -forward], axis=1)
    c2w[:3, 3] = eye
    return c2w


def render_sphere(c2w_gl: np.ndarray, camera: PinholeCamera) -> RenderedView:
    """Planar depth and colour (red above the centre, blue below) of the sphere at the camera's pixel centres."""
    c2w_cv = opengl_to_opencv(c2w_gl)
    rays = camera.rays() @ c2w_cv[:3, :3].T  # unit camera z
    origin, center = c2w_cv[:3, 3], CENTER.double().numpy()
    # |o + t r - c|^2 = R^2, t = planar depth since r has unit camera z
    a, b, c = (rays**2).sum(-1), 2 * (rays @ (origin - center)), ((origin - center) ** 2).sum() - RADIUS**2
    disc = b**2 - 4 * a * c
    depth = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0)
    points = origin + depth[..., None] * rays
    rgb = np.where((points[..., 2:3] > center[2]), [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    return RenderedView(rgb=rgb, depth=depth, camera=camera, c2w=c2w_gl)


def sphere_views(n: int = 12, size: int = 64) -> list[RenderedView]:
    camera = PinholeCamera(70.0, 70.0, size / 2, size / 2, size, size)
    center = CENTER.double().numpy()
    views = []
    for i in range(n):
        angle, height = 2 * np.pi * i / n, (1.0 if i % 2 else -0.8)
        eye = center + np.array([2.2 * np.cos(angle), 2.2 * np.sin(angle), height])
        views.append(render_sphere(look_at_opengl(eye, center), camera))
    return views


def test_world_to_camera_extrinsic_puts_the_target_in_front():
    c2w = look_at_opengl(np.array([3.0, 0.0, 0.0]), np.zeros(3))
    point = world_to_camera_opencv(c2w) @ np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(point[:3], [0.0, 0.0, 3.0], atol=1e-12)  # OpenCV: on the axis, 3 ahead


def test_tsdf_fusion_of_sphere_renders_recovers_the_sphere_and_its_colours():
    voxel = 0.02
    mesh = fuse_tsdf(sphere_views(), BOX, voxel_size=voxel)
    errors = np.abs(radii(mesh) - RADIUS)
    # 12 views of 64 px (a pixel ~ 0.03 at the sphere): measured median 0.0025, max 0.0155. Shifting cx, cy by
    # half a pixel (the other pixel-centre convention) gives median 0.0061, so this bound tests the convention.
    assert np.median(errors) < 0.2 * voxel and errors.max() < voxel
    upper = mesh.vertices[:, 2] > CENTER[2].item() + 2 * voxel
    lower = mesh.vertices[:, 2] < CENTER[2].item() - 2 * voxel
    colors = mesh.visual.vertex_colors[:, :3].astype(int)
    assert (colors[upper, 0] > 200).mean() > 0.95 and (colors[lower, 2] > 200).mean() > 0.95
    # every part of the sphere was seen: the fused surface is complete at a voxel's tolerance
    gt = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS).apply_translation(CENTER.numpy())
    scores = mesh_chamfer_fscore(mesh, gt, threshold=voxel, n_points=20_000)
    assert scores["fscore"] > 0.95 and scores["chamfer_l1"] < 0.5 * voxel, scores


def test_tsdf_crops_to_the_box_and_refuses_empty_input():
    views = sphere_views(n=6)
    below_center = np.array([BOX[0], [BOX[1, 0], BOX[1, 1], CENTER[2].item()]])
    half = fuse_tsdf(views, below_center, voxel_size=0.03)
    assert half.vertices[:, 2].max() <= CENTER[2].item() and half.vertices[:, 2].min() < CENTER[2].item() - 0.4
    with pytest.raises(EmptyMeshError, match="no rendered pixel had a depth"):
        fuse_tsdf([RenderedView(v.rgb, np.zeros_like(v.depth), v.camera, v.c2w) for v in views], BOX, voxel_size=0.03)
    far_box = BOX + 10.0
    with pytest.raises(EmptyMeshError, match="no surface inside the box"):
        fuse_tsdf(views, far_box, voxel_size=0.03, max_depth=100.0)


def test_views_with_few_valid_pixels_are_fused_not_refused():
    # a view whose only valid pixels lie off open3d's every-4th-pixel grid (as ir-nerf's mostly transparent 32-px
    # renders): each is integrated, and two such views of the same spot make a surface there
    (view,) = sphere_views(n=1, size=32)
    depth = np.zeros_like(view.depth)
    depth[13:19, 13:19] = view.depth[13:19, 13:19]  # 6x6 pixels at the centre
    depth[16, :], depth[:, 16] = 0.0, 0.0  # none on a multiple of 4 in both row and column
    assert not (depth[::4, ::4] > 0).any() and (depth > 0).sum() > 10
    view = RenderedView(view.rgb, depth, view.camera, view.c2w)
    mesh = fuse_tsdf([view, view], BOX, voxel_size=0.02)
    assert np.median(np.abs(radii(mesh) - RADIUS)) < 0.02


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_writers_keep_geometry_and_vertex_colours(tmp_path, suffix):
    mesh = sdf_to_mesh(sphere_sdf, BOX, resolution=24, color=lambda p: torch.tensor([[1.0, 0.5, 0.0]]).expand(len(p), 3))
    path = write_mesh(mesh, tmp_path / f"sphere{suffix}")
    back = trimesh.load(path, force="mesh", process=False)
    assert len(back.faces) == len(mesh.faces)
    assert np.abs(radii(back) - RADIUS).max() < 1e-3
    np.testing.assert_allclose(back.visual.vertex_colors[:, :3], [[255, 128, 0]] * len(back.vertices), atol=1)
    summary = mesh_summary(mesh)
    assert summary["watertight"] and summary["faces"] == len(mesh.faces)
    assert "watertight: yes" in format_summary(summary)


def test_an_unknown_mesh_format_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(Vision3DError, match=r"mesh\.stl: unknown mesh format"):
        write_mesh(trimesh.creation.box(), tmp_path / "mesh.stl")


def test_ray_distance_to_planar_depth_matches_nerfstudio_rays():
    """NeRF-style models render distance along unit rays; dividing by nerfstudio's ``directions_norm`` makes it z."""
    from nerfstudio.cameras.cameras import Cameras

    from vision3d.export.from_run import directions_norm

    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=50.0, fy=60.0, cx=20.0, cy=14.0, width=40, height=30)
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    scale = directions_norm(PinholeCamera(50.0, 60.0, 20.0, 14.0, 40, 30))
    np.testing.assert_allclose(scale, rays.metadata["directions_norm"][..., 0].numpy(), rtol=1e-6)
