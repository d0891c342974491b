"""Render a real 3D model with Cycles: the bpy side of ``v3d data render``.

This file runs inside Blender's own Python (Debian ``blender`` 3.4), so it imports only bpy, mathutils,
the standard library and numpy. The driver (:mod:`vision3d.data.render`) writes a JSON config and calls::

    blender -b --factory-startup --python blender_script.py -- --config CONFIG.json

Config keys (all written by the driver): ``model``, ``up`` ("y" or "z": the model file's up axis for
formats without axis conversion: off, ply, stl), ``out_dir``, ``path`` ("orbit", "forward", "walk"),
``views``, ``width``, ``height``, ``spp``, ``hdri`` (an .exr path), ``hdri_strength``, ``ground_texture``
(a PNG path or null), ``ground`` (false: no ground plane), ``model_texture`` (PNG or null, used only
when the model has no material), ``wall_texture`` (PNG or null, walk path), ``seed``, ``fov_deg``,
``threads``, ``mesh_max_faces``, ``view_range`` ([first, stop) path indices to render, or absent: all),
``size`` (the model's largest side after normalisation: 1, or 0.6 in the walk-through room),
``extra_models`` (more model files, each normalised to ``size`` and set in a row along +X beside the
first, the row then normalised to ``size``), ``parts`` (null, ``models``: one part per model file,
``objects``: one per mesh object, ``slabs:K``: the model cut into K slabs of equal extent along its
longest axis).

Scene: the model is centred at the origin (world +Z up); ``orbit`` and ``forward`` stand it on a 5×5
textured ground plane at its lowest point, ``walk`` puts it in an open-top 4.4×3.4×1.6 room (textured
floor and walls, an area light over the top). The HDRI lights everything and is the visible background;
its rotation comes from the seed.

What it writes into ``out_dir``:

* ``exr/frame_00001.exr`` ... one multilayer EXR per view with ``ViewLayer.Combined.{R,G,B,A}`` (linear
  scene-referred radiance), ``ViewLayer.Depth.Z`` (planar z-depth along the camera axis, in world units
  = metres; ~1e10 where nothing is hit), ``ViewLayer.Normal.{X,Y,Z}`` (world-space shading normals) and
  ``ViewLayer.Vector.{X,Y,Z,W}`` (motion vectors; forward flow to the next frame in image axes x right,
  y down is ``(-Z, +W)``; motion blur is off so the pass is exact).
* ``cameras.json``: per view the camera-to-world matrix (Blender camera axes = OpenGL: looks down -Z,
  +Y up), the pose of the frame after the last one (the flow target of the last view), ``view_indices``
  (the path indices rendered: all, or ``view_range`` [first, stop)), ``last_has_next`` (whether the last
  rendered view has a next pose on the path: closed orbit, or a range that stops early), intrinsics,
  ``model_to_world`` (the up-axis rotation and normalisation: file coordinates to world for off/ply/stl,
  Blender's imported Z-up coordinates for the others), Blender's version.
* with ``parts``: ``ViewLayer.IndexOB.X`` in each EXR, the part id per pixel (1..P, 0 = ground, room,
  background; Cycles writes the id of the first hit, not a blend), and ``part_names`` in ``cameras.json``.
* ``mesh.npz``: every mesh in the scene, triangulated, in world coordinates (``vertices`` [V, 3],
  ``faces`` [F, 3], ``part`` [F]: 0 = model, 1 = ground / room), and ``mesh_small.npz`` with the model
  decimated to at most ``mesh_max_faces`` faces when that is set.

Progress lines ``V3D_PROGRESS i n`` go to stdout for the driver's progress bar.
"""

import json
import math
import os
import random
import sys
import time

import bpy
import numpy as np
from mathutils import Matrix, Vector

# ---------------------------------------------------------------------------------------------- model


def read_off(path):
    """Vertices [V, 3] and polygon index lists of an OFF file (also COFF/NOFF headers, comments, colours)."""
    with open(path, encoding="latin-1") as f:
        tokens_by_line = []
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                tokens_by_line.append(line.split())
    if not tokens_by_line or not tokens_by_line[0][0].upper().endswith("OFF"):
        raise ValueError(f"{path}: not an OFF file (the first line must be OFF)")
    header = tokens_by_line[0][1:]
    rest = tokens_by_line[1:]
    if not header:
        header, rest = rest[0], rest[1:]
    n_vertices, n_faces = int(header[0]), int(header[1])
    vertices = [[float(t) for t in line[:3]] for line in rest[:n_vertices]]
    faces = []
    for line in rest[n_vertices : n_vertices + n_faces]:
        count = int(line[0])
        faces.append([int(t) for t in line[1 : 1 + count]])
    if len(vertices) != n_vertices or len(faces) != n_faces:
        raise ValueError(f"{path}: header promises {n_vertices} vertices / {n_faces} faces, file is shorter")
    return vertices, faces


def import_model(path, up):
    """Import ``path`` and return its mesh objects. off/ply/stl are rotated so that ``up`` becomes +Z."""
    ext = os.path.splitext(path)[1].lower()
    before = set(bpy.data.objects)
    axis_converted = True
    if ext == ".off":
        vertices, faces = read_off(path)
        mesh = bpy.data.meshes.new("model")
        mesh.from_pydata(vertices, [], faces)
        mesh.validate()
        obj = bpy.data.objects.new("model", mesh)
        bpy.context.scene.collection.objects.link(obj)
        axis_converted = False
    elif ext == ".obj":
        if hasattr(bpy.ops.wm, "obj_import"):
            bpy.ops.wm.obj_import(filepath=path)
        else:
            bpy.ops.import_scene.obj(filepath=path)
    elif ext == ".ply":
        bpy.ops.import_mesh.ply(filepath=path)
        axis_converted = False
    elif ext == ".stl":
        bpy.ops.import_mesh.stl(filepath=path)
        axis_converted = False
    elif ext in (".glb", ".gltf"):
        # Blender 3.4's glTF importer uses ``np.bool``, which numpy >= 1.24 (Debian 12's) removed; it fails on
        # any mesh with normals. Restore the alias inside this Blender process only.
        if "bool" not in np.__dict__:
            np.bool = np.bool_
        bpy.ops.import_scene.gltf(filepath=path)
    elif ext == ".dae":
        bpy.ops.wm.collada_import(filepath=path)
    else:
        raise ValueError(f"{path}: unsupported model format {ext!r} (off, obj, ply, stl, glb, gltf, dae)")
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH"]
    if not meshes:
        raise ValueError(f"{path}: the importer produced no mesh")
    # Drop imported cameras and lights: the scene's own camera and the HDRI light it.
    for o in new:
        if o.type in ("CAMERA", "LIGHT"):
            bpy.data.objects.remove(o, do_unlink=True)
    rot = Matrix.Identity(4)
    if not axis_converted and up == "y":
        rot = Matrix.Rotation(math.pi / 2, 4, "X")  # +Y -> +Z
        for o in meshes:
            if o.parent is None:
                o.matrix_world = rot @ o.matrix_world
    bpy.context.view_layer.update()
    return meshes, rot


def world_vertices(objects):
    """All evaluated vertices of ``objects`` in world coordinates, [N, 3]."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    chunks = []
    for o in objects:
        ev = o.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        m = np.array(ev.matrix_world)
        chunks.append(co @ m[:3, :3].T + m[:3, 3])
        ev.to_mesh_clear()
    return np.concatenate(chunks, 0)


def normalise(objects, size):
    """Scale and move the model so its bounding box is centred at the origin with largest side ``size``."""
    v = world_vertices(objects)
    lo, hi = v.min(0), v.max(0)
    scale = size / float((hi - lo).max())
    centre = (lo + hi) / 2
    transform = Matrix.Diagonal((scale, scale, scale, 1.0)) @ Matrix.Translation(Vector(-centre))
    for o in objects:
        if o.parent is None or o.parent not in objects:
            top = o
            while top.parent is not None:
                top = top.parent
            top.matrix_world = transform @ top.matrix_world
    bpy.context.view_layer.update()
    v = world_vertices(objects)
    return transform, v.min(0), v.max(0)


# ------------------------------------------------------------------------------------------ materials


def image_material(name, image_path, tint, projection="UV", scale=1.0, roughness=0.6):
    """Principled BSDF with a (grey or colour) photo times ``tint``; box projection needs no UVs."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = roughness
    if image_path is None:
        bsdf.inputs["Base Color"].default_value = (*tint, 1.0)
        return mat
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(image_path)
    tex.extension = "REPEAT"
    coords = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Scale"].default_value = (scale, scale, scale)
    if projection == "BOX":
        tex.projection = "BOX"
        tex.projection_blend = 0.3
        links.new(coords.outputs["Object"], mapping.inputs["Vector"])
    else:
        links.new(coords.outputs["UV"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
    mix = nodes.new("ShaderNodeMixRGB")
    mix.blend_type = "MULTIPLY"
    mix.inputs["Fac"].default_value = 1.0
    mix.inputs["Color2"].default_value = (*tint, 1.0)
    links.new(tex.outputs["Color"], mix.inputs["Color1"])
    links.new(mix.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def setup_world(hdri, strength, rotation):
    world = bpy.data.worlds.new("hdri")
    bpy.context.scene.world = world
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    env = nodes.new("ShaderNodeTexEnvironment")
    env.image = bpy.data.images.load(hdri)
    coords = nodes.new("ShaderNodeTexCoord")
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Rotation"].default_value = (0.0, 0.0, rotation)
    links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], env.inputs["Vector"])
    background = nodes["Background"]
    background.inputs["Strength"].default_value = strength
    links.new(env.outputs["Color"], background.inputs["Color"])


def add_box_mesh(name, quads, material, uv_scale):
    """A mesh made of axis-aligned quads ``(corners[4], normal)``, UVs in world units times ``uv_scale``."""
    vertices, faces = [], []
    for corners in quads:
        base = len(vertices)
        vertices.extend(corners)
        faces.append([base, base + 1, base + 2, base + 3])
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices, [], faces)
    uv = mesh.uv_layers.new(name="UVMap")
    for poly in mesh.polygons:
        normal = poly.normal
        axis = max(range(3), key=lambda k: abs(normal[k]))
        keep = [k for k in range(3) if k != axis]
        for li in poly.loop_indices:
            co = mesh.vertices[mesh.loops[li].vertex_index].co
            uv.data[li].uv = (co[keep[0]] * uv_scale, co[keep[1]] * uv_scale)
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def add_ground(z, half, texture):
    mat = image_material("ground", texture, (0.75, 0.62, 0.50), scale=1.0, roughness=0.8)
    c = [(-half, -half, z), (half, -half, z), (half, half, z), (-half, half, z)]
    return add_box_mesh("ground", [c], mat, uv_scale=0.5)


def add_room(lo, hi, floor_texture, wall_texture):
    """An open-top room (floor and four inward-facing walls), lit by the HDRI through the open top and by an
    area light (a skylight) just above it."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    floor = add_box_mesh(
        "floor",
        [[(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0)]],
        image_material("floor", floor_texture, (0.70, 0.55, 0.42), roughness=0.7),
        uv_scale=0.5,
    )
    walls = [
        [(x0, y0, z0), (x0, y0, z1), (x1, y0, z1), (x1, y0, z0)],  # y = y0, faces +y
        [(x1, y1, z0), (x1, y1, z1), (x0, y1, z1), (x0, y1, z0)],  # y = y1, faces -y
        [(x0, y1, z0), (x0, y1, z1), (x0, y0, z1), (x0, y0, z0)],  # x = x0, faces +x
        [(x1, y0, z0), (x1, y0, z1), (x1, y1, z1), (x1, y1, z0)],  # x = x1, faces -x
    ]
    wall = add_box_mesh(
        "walls", walls, image_material("walls", wall_texture, (0.85, 0.80, 0.72), roughness=0.9), uv_scale=0.6
    )
    # a skylight over the open top: the HDRI alone leaves the room's lower half too dark and noisy
    light = bpy.data.lights.new("skylight", "AREA")
    light.shape = "RECTANGLE"
    light.size, light.size_y = (x1 - x0) * 0.8, (y1 - y0) * 0.8
    light.energy = 10.0 * (x1 - x0) * (y1 - y0)
    lamp = bpy.data.objects.new("skylight", light)
    lamp.location = ((x0 + x1) / 2, (y0 + y1) / 2, z1 + 0.3)
    bpy.context.scene.collection.objects.link(lamp)
    return [floor, wall]


# ------------------------------------------------------------------------------------------- cameras


def look_at(eye, target, up=(0.0, 0.0, 1.0)):
    """Camera-to-world [4, 4] (Blender/OpenGL camera axes: looks down -Z, +Y up) as a mathutils Matrix."""
    eye, target, up = Vector(eye), Vector(target), Vector(up)
    back = (eye - target).normalized()
    right = up.cross(back)
    if right.length < 1e-6:
        right = Vector((1.0, 0.0, 0.0))
    right.normalize()
    true_up = back.cross(right)
    m = Matrix.Identity(4)
    for r in range(3):
        m[r][0], m[r][1], m[r][2], m[r][3] = right[r], true_up[r], back[r], eye[r]
    return m


def camera_path(kind, n, radius, rng, room=None, centre=(0.0, 0.0, 0.0)):
    """``n + 1`` camera-to-world matrices: the views, then the flow target of the last view."""
    poses = []
    phase = rng.uniform(0.0, 2 * math.pi)
    cx, cy, cz = centre
    if kind == "orbit":
        # a full circle, elevation waving between ~12 and ~45 degrees; view n is view 0 again (closed path)
        for i in range(n + 1):
            t = (i % n) / n
            az = phase + 2 * math.pi * t
            el = math.radians(28.0 + 16.0 * math.sin(4 * math.pi * t))
            eye = (cx + radius * math.cos(el) * math.cos(az), cy + radius * math.cos(el) * math.sin(az),
                   cz + radius * math.sin(el))
            poses.append(look_at(eye, centre))
    elif kind == "forward":
        # LLFF-like: camera centres on a spiral in a small disc facing the model, all looking at its centre
        el = math.radians(20.0)
        base = Vector((cx + radius * math.cos(el) * math.cos(phase), cy + radius * math.cos(el) * math.sin(phase),
                       cz + radius * math.sin(el)))
        frame = look_at(base, centre)
        right, up = frame.col[0].to_3d(), frame.col[1].to_3d()
        spread = 0.18 * radius
        for i in range(n + 1):
            t = i / n
            theta = 2 * math.pi * 2.0 * t  # two turns, evenly spaced in angle for any n
            rho = spread * (0.35 + 0.65 * t)
            eye = base + right * (rho * math.cos(theta)) + up * (0.6 * rho * math.sin(theta))
            poses.append(look_at(eye, centre))
    elif kind == "walk":
        # inside the room: along an ellipse through 3/4 of a turn at eye height, looking ahead and inwards
        (x0, y0, _), (x1, y1, z1) = room
        ax, ay = 0.7 * (x1 - x0) / 2, 0.7 * (y1 - y0) / 2
        height = room[0][2] + 0.6
        sweep = 1.5 * math.pi

        def point(t):
            a = phase + sweep * t
            return Vector((cx + ax * math.cos(a), cy + ay * math.sin(a), height + 0.08 * math.sin(3 * a)))

        for i in range(n + 1):
            t = i / max(n - 1, 1)
            eye = point(t)
            ahead = point(t + 0.25)
            target = 0.3 * ahead + 0.7 * Vector((cx, cy, cz))
            poses.append(look_at(eye, target))
    else:
        raise ValueError(f"unknown camera path {kind!r} (orbit, forward, walk)")
    return poses


def keyframe_camera(cam, poses):
    cam.rotation_mode = "XYZ"
    previous = None
    for frame, pose in enumerate(poses, start=1):
        loc, rot, _ = pose.decompose()
        euler = rot.to_euler("XYZ", previous) if previous is not None else rot.to_euler("XYZ")
        previous = euler
        cam.location = loc
        cam.rotation_euler = euler
        cam.keyframe_insert("location", frame=frame)
        cam.keyframe_insert("rotation_euler", frame=frame)
    for fcurve in cam.animation_data.action.fcurves:
        for key in fcurve.keyframe_points:
            key.interpolation = "LINEAR"


# ------------------------------------------------------------------------------------------- meshes


def export_triangles(objects_parts, path):
    depsgraph = bpy.context.evaluated_depsgraph_get()
    vertices, faces, parts, offset = [], [], [], 0
    for obj, part in objects_parts:
        ev = obj.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        mesh.calc_loop_triangles()
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        co = co.reshape(-1, 3)
        tri = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", tri)
        m = np.array(ev.matrix_world)
        vertices.append(co @ m[:3, :3].T + m[:3, 3])
        faces.append(tri.reshape(-1, 3) + offset)
        parts.append(np.full(len(tri) // 3, part, dtype=np.uint8))
        offset += len(co)
        ev.to_mesh_clear()
    np.savez(path, vertices=np.concatenate(vertices).astype(np.float32), faces=np.concatenate(faces),
             part=np.concatenate(parts))


# --------------------------------------------------------------------------------------------- parts


def split_into_slabs(objects, k):
    """Cut ``objects`` into ``k`` slabs of equal extent along the longest world axis (by face centre)."""
    import bmesh

    v = world_vertices(objects)
    axis = int(np.argmax(v.max(0) - v.min(0)))
    edges = np.linspace(v.min(0)[axis], v.max(0)[axis], k + 1)
    edges[-1] += 1e-6
    slabs = [[] for _ in range(k)]
    for o in objects:
        m = np.array(o.matrix_world)
        for j in range(k):
            piece = o.copy()
            piece.data = o.data.copy()
            bpy.context.scene.collection.objects.link(piece)
            bm = bmesh.new()
            bm.from_mesh(piece.data)
            drop = [f for f in bm.faces
                    if not edges[j] <= (m[:3, :3] @ np.array(f.calc_center_median()) + m[:3, 3])[axis] < edges[j + 1]]
            bmesh.ops.delete(bm, geom=drop, context="FACES")
            bm.to_mesh(piece.data)
            bm.free()
            slabs[j].append(piece)
    for o in objects:
        bpy.data.objects.remove(o, do_unlink=True)
    bpy.context.view_layer.update()
    return slabs


def assign_parts(groups, mode):
    """Set ``pass_index`` 1..P on the model's objects; returns (the model's objects, the part names).

    ``groups``: one (name, objects) per model file."""
    objects = [o for _, objs in groups for o in objs]
    if mode == "models":
        parts = [(name, objs) for name, objs in groups]
    elif mode == "objects":
        parts = [(o.name, [o]) for o in objects]
    elif mode.startswith("slabs:"):
        k = int(mode.split(":", 1)[1])
        slabs = split_into_slabs(objects, k)
        parts = [(f"slab{j + 1}", objs) for j, objs in enumerate(slabs)]
        objects = [o for objs in slabs for o in objs]
    else:
        raise ValueError(f"unknown parts mode {mode!r} (models, objects, slabs:K)")
    for index, (_, objs) in enumerate(parts):
        for o in objs:
            o.pass_index = index + 1
    return objects, [name for name, _ in parts]


# --------------------------------------------------------------------------------------------- main


def main():
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    if len(argv) != 2 or argv[0] != "--config":
        raise SystemExit("usage: blender -b --factory-startup --python blender_script.py -- --config CONFIG.json")
    with open(argv[1]) as f:
        cfg = json.load(f)
    rng = random.Random(cfg.get("seed", 0))
    out = cfg["out_dir"]
    os.makedirs(os.path.join(out, "exr"), exist_ok=True)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene

    model, up_rotation = import_model(cfg["model"], cfg.get("up", "z"))
    groups = [(os.path.splitext(os.path.basename(cfg["model"]))[0], model)]
    extra = cfg.get("extra_models") or []
    if extra:
        size = cfg.get("size", 1.0)
        normalise(model, size)
        for k, path in enumerate(extra):
            objs, _ = import_model(path, cfg.get("up", "z"))
            normalise(objs, size)
            shift = Matrix.Translation(Vector((1.2 * size * (k + 1), 0.0, 0.0)))
            for o in objs:
                if o.parent is None:
                    o.matrix_world = shift @ o.matrix_world
            bpy.context.view_layer.update()
            groups.append((os.path.splitext(os.path.basename(path))[0], objs))
            model = model + objs
    part_names = []
    if cfg.get("parts"):
        model, part_names = assign_parts(groups, cfg["parts"])
    for o in model:
        if len(o.data.materials) == 0:
            o.data.materials.append(
                image_material("model", cfg.get("model_texture"), (0.80, 0.72, 0.60), projection="BOX",
                               scale=0.8, roughness=0.5)
            )
    kind = cfg["path"]
    # a unit-size model; smaller inside the walk-through room so that the room is seen too
    transform, lo, hi = normalise(model, cfg.get("size", 0.6 if kind == "walk" else 1.0))
    bound_radius = float(np.linalg.norm(hi - lo) / 2)
    centre = tuple(float(c) for c in (lo + hi) / 2)

    parts = [(o, 0) for o in model]
    room = None
    if kind == "walk":
        room = ((-2.2, -1.7, float(lo[2])), (2.2, 1.7, float(lo[2]) + 1.6))
        for o in add_room(room[0], room[1], cfg.get("ground_texture"), cfg.get("wall_texture")):
            parts.append((o, 1))
    elif cfg.get("ground", True):
        parts.append((add_ground(float(lo[2]), 2.5, cfg.get("ground_texture")), 1))

    setup_world(cfg["hdri"], cfg.get("hdri_strength", 1.0), rng.uniform(0.0, 2 * math.pi))

    width, height = int(cfg["width"]), int(cfg["height"])
    fov = math.radians(cfg.get("fov_deg", 70.0 if kind == "walk" else 40.0))
    cam_data = bpy.data.cameras.new("camera")
    cam_data.sensor_fit = "HORIZONTAL" if width >= height else "VERTICAL"
    cam_data.sensor_width = cam_data.sensor_height = 36.0
    cam_data.lens = 18.0 / math.tan(fov / 2)
    cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
    cam = bpy.data.objects.new("camera", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    focal = (max(width, height) / 2) / math.tan(fov / 2)

    n = int(cfg["views"])
    # the bounding sphere (half the box diagonal) is conservative: 0.9 of it still frames the model
    radius = 0.9 * bound_radius / math.sin(fov / 2)
    poses = camera_path(kind, n, radius, rng, room=room, centre=centre)
    keyframe_camera(cam, poses)

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = int(cfg["spp"])
    scene.cycles.use_denoising = False  # Debian's build has no OpenImageDenoise
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 4
    scene.cycles.sample_clamp_indirect = 10.0
    scene.cycles.seed = int(cfg.get("seed", 0))
    scene.render.threads_mode = "FIXED"
    scene.render.threads = int(cfg.get("threads", 2))
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.use_motion_blur = False
    scene.render.use_persistent_data = True  # keep the BVH and images between views: only the camera moves
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    layer = scene.view_layers[0]
    layer.name = "ViewLayer"
    layer.use_pass_z = True
    layer.use_pass_normal = True
    layer.use_pass_vector = True
    layer.use_pass_object_index = bool(part_names)
    settings = scene.render.image_settings
    settings.file_format = "OPEN_EXR_MULTILAYER"
    settings.color_depth = "32"
    settings.exr_codec = "ZIP"
    scene.frame_start, scene.frame_end = 1, n + 1

    # view_range [first, stop): render only those views of the n-view path (the motion per view stays that of
    # the full path), e.g. a short stretch at many samples per pixel for an event simulator
    first, stop = cfg.get("view_range") or (0, n)
    frames = []
    start = time.time()
    for i in range(first, stop):
        scene.frame_set(i + 1)
        scene.render.filepath = os.path.join(out, "exr", f"frame_{i + 1:05d}.exr")
        bpy.ops.render.render(write_still=True)
        frames.append([list(row) for row in cam.matrix_world])
        print(f"V3D_PROGRESS {i - first + 1} {stop - first}", flush=True)
    scene.frame_set(stop + 1)
    next_pose = [list(row) for row in cam.matrix_world]

    export_triangles(parts, os.path.join(out, "mesh.npz"))
    max_faces = cfg.get("mesh_max_faces")
    if max_faces:
        total = sum(len(o.data.polygons) for o in model)
        if total > max_faces:
            for o in model:
                mod = o.modifiers.new("decimate", "DECIMATE")
                mod.ratio = max_faces / total
        export_triangles(parts, os.path.join(out, "mesh_small.npz"))

    info = {
        "frames": frames,
        "next_pose": next_pose,
        "closed_path": kind == "orbit",
        "view_indices": list(range(first, stop)),
        "last_has_next": kind == "orbit" or stop < n,
        "fov_deg": math.degrees(fov),
        "fl_x": focal,
        "fl_y": focal,
        "cx": width / 2,
        "cy": height / 2,
        "w": width,
        "h": height,
        "model_to_world": [list(row) for row in transform @ up_rotation],
        "model_bounds": [lo.tolist(), hi.tolist()],
        "room": room,
        "blender_version": bpy.app.version_string,
        "part_names": part_names,
        "seconds": time.time() - start,
    }
    with open(os.path.join(out, "cameras.json"), "w") as f:
        json.dump(info, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # make Blender exit non-zero so the driver reports it
        import traceback

        traceback.print_exc()
        print(f"V3D_ERROR {type(exc).__name__}: {exc}", flush=True)
        sys.stdout.flush()
        os._exit(1)
