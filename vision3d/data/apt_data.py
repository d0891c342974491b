"""Real data that only Debian's apt provides, fetched without a root install.

``apt-get download PKG`` puts the package's ``.deb`` into our cache (``apt/`` under
:func:`vision3d.cache.cache_root`, by default ``~/.cache/vision3d/apt``) and
``dpkg-deb --fsys-tarfile PKG.deb | tar x`` extracts only the folder we need. Nothing is installed, no dependency is pulled in, no root is needed (apt only needs its package
lists, i.e. one ``apt-get update`` on the machine). Every step is cached: a second call reads the disk.

This is the one place where vision3d fetches anything, and only when a command asks for one of these
data sets (``v3d data render`` / ``fetch-mesh`` with a mesh name, ``v3d pose eval --data castle`` and
``v3d data import-visp``, :func:`vision3d.data.stereo.aloe`). With ``VISION3D_OFFLINE=1`` (the tests set it unless a test is marked
``apt``) only what is already cached is used. When apt is missing, cannot reach its archive or is told not
to, :class:`AptUnavailableError` says why, so tests can skip with the reason.

Real meshes (:data:`MESHES`, fetched by :func:`fetch_mesh`), each with its origin and licence:

* ``libcgal-demo`` (CGAL 5.5 demo data, ``/usr/share/doc/libcgal-dev/data.tar.gz`` → ``data/meshes``):
  the Stanford bunny and armadillo, the Chinese dragon, and other classic meshes.
* ``assimp-testmodels``: the textured COLLADA duck (Khronos / Sony sample model).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from vision3d.cache import cache_root
from vision3d.errors import Vision3DError


class AptUnavailableError(Vision3DError, RuntimeError):
    """apt (or dpkg-deb) is missing, or cannot download the package. The message says which and why."""


class NotInPackageError(Vision3DError, FileNotFoundError):
    """The downloaded package does not hold the requested file (a different package version?)."""


class UnknownMeshError(Vision3DError, ValueError):
    """A mesh name that :data:`MESHES` does not know."""


def apt_cache_dir() -> Path:
    return cache_root() / "apt"


def _run(cmd: list[str], cwd: Path | None = None, what: str = "") -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise AptUnavailableError(f"{cmd[0]} is not installed here ({what}); this needs Debian's apt and dpkg") from exc
    except subprocess.TimeoutExpired as exc:
        raise AptUnavailableError(f"`{' '.join(cmd)}` timed out after 600 s ({what})") from exc
    return proc


def download_deb(package: str) -> Path:
    """The ``.deb`` of ``package`` in the cache, downloaded with ``apt-get download`` if not there yet."""
    folder = apt_cache_dir() / "debs"
    found = sorted(folder.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if os.environ.get("VISION3D_OFFLINE", "") not in ("", "0"):
        raise AptUnavailableError(f"VISION3D_OFFLINE is set: not downloading Debian package {package!r} "
                                  f"(not in {folder})")
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("apt-get") is None:
        raise AptUnavailableError(f"apt-get is not installed here; cannot download Debian package {package!r}")
    proc = _run(["apt-get", "download", package], cwd=folder, what=f"downloading {package}")
    found = sorted(folder.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        hint = " (run `apt-get update` once if apt has no package lists)" if "Unable to locate" in tail else ""
        raise AptUnavailableError(f"`apt-get download {package}` failed{hint}:\n{tail}")
    return found[-1]


def extract_from_deb(package: str, member: str) -> Path:
    """Extract ``member`` (a file or folder path inside the package, e.g. ``/usr/share/foo``) once.

    Returns its path under ``<cache>/apt/<package>/``.
    """
    return extract_files(package, [member])[0]


def extract_files(package: str, members: list[str]) -> list[Path]:
    """Extract several files or folders of ``package`` with one pass over the ``.deb``; cached."""
    members = [m.lstrip("/").removeprefix("./") for m in members]
    root = apt_cache_dir() / package
    targets = [root / m for m in members]
    markers = [root / ".extracted" / m.replace("/", "__") for m in members]
    missing = [m for m, t, k in zip(members, targets, markers, strict=True) if not (k.exists() and t.exists())]
    if not missing:
        return targets
    deb = download_deb(package)
    if shutil.which("dpkg-deb") is None:
        raise AptUnavailableError("dpkg-deb is not installed here; cannot unpack Debian packages")
    root.mkdir(parents=True, exist_ok=True)
    fsys = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "x", "-C", str(root), *(f"./{m}" for m in missing)], stdin=fsys.stdout,
                           capture_output=True, text=True)
    fsys.stdout.close()
    fsys.wait()
    absent = [m for m in missing if not (root / m).exists()]
    if fsys.returncode != 0 or untar.returncode != 0 or absent:
        raise NotInPackageError(f"{', '.join(absent) or missing[0]} not extracted from {deb.name}: "
                                f"{untar.stderr.strip()[-500:]}")
    for marker in markers:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    return targets


@dataclass(frozen=True)
class MeshSource:
    """Where a real mesh comes from and under which terms."""

    name: str
    package: str  # Debian package
    path: str  # file inside the package (or inside ``archive`` when that is set)
    archive: str | None  # a tarball inside the package that holds ``path``
    up: str  # the file's up axis: "y" or "z" (ignored for formats that Blender converts itself)
    origin: str
    licence: str
    extra_files: tuple[str, ...] = ()  # textures next to the model

    def describe(self) -> dict:
        return {"name": self.name, "package": self.package, "path": self.path,
                **({"archive": self.archive} if self.archive else {}), "origin": self.origin,
                "licence": self.licence}


_CGAL_ARCHIVE = "/usr/share/doc/libcgal-dev/data.tar.gz"
_CGAL_LICENCE = ("shipped as CGAL 5.5.1 demo data in Debian's libcgal-demo (CGAL: GPL-3+/LGPL-3+); the mesh "
                 "itself keeps its original owner's terms")
_STANFORD = ("Stanford 3D Scanning Repository (Stanford Computer Graphics Laboratory); free for research, "
             "cite the repository; commercial use needs Stanford's permission")

MESHES: dict[str, MeshSource] = {
    "bunny": MeshSource("bunny", "libcgal-demo", "data/meshes/bunny00.off", _CGAL_ARCHIVE, "y",
                        "Stanford bunny (Turk & Levoy 1994), " + _STANFORD, _CGAL_LICENCE),
    "armadillo": MeshSource("armadillo", "libcgal-demo", "data/meshes/armadillo.off", _CGAL_ARCHIVE, "y",
                            "Stanford armadillo (Krishnamurthy & Levoy 1996), " + _STANFORD, _CGAL_LICENCE),
    "dragon": MeshSource("dragon", "libcgal-demo", "data/meshes/ChineseDragon-10kv.off", _CGAL_ARCHIVE, "y",
                         "Chinese dragon, 10k-vertex remesh from CGAL's data (AIM@SHAPE repository)",
                         _CGAL_LICENCE),
    "elephant": MeshSource("elephant", "libcgal-demo", "data/meshes/elephant.off", _CGAL_ARCHIVE, "y",
                           "elephant from CGAL's data (AIM@SHAPE / Sumner & Popovic deformation set)",
                           _CGAL_LICENCE),
    "cow": MeshSource("cow", "libcgal-demo", "data/meshes/cow.off", _CGAL_ARCHIVE, "y",
                      "cow from CGAL's data", _CGAL_LICENCE),
    "bull": MeshSource("bull", "libcgal-demo", "data/meshes/bull.off", _CGAL_ARCHIVE, "y",
                       "bull from CGAL's data", _CGAL_LICENCE),
    "duck": MeshSource("duck", "assimp-testmodels", "/usr/share/assimp/models/Collada/duck.dae", None, "y",
                       "COLLADA duck sample model (Khronos COLLADA samples; (c) Sony Computer Entertainment, "
                       "SCEA Shared Source License 1.0), as shipped in assimp's test models",
                       "Debian assimp-testmodels (assimp: BSD-3-Clause; models under their own terms)",
                       extra_files=("/usr/share/assimp/models/Collada/duckCM.tga",)),
}


def fetch_mesh(name: str) -> Path:
    """Path of the real mesh ``name`` (a key of :data:`MESHES`), fetched from apt and cached."""
    if name not in MESHES:
        raise UnknownMeshError(f"unknown mesh {name!r}; known: {', '.join(sorted(MESHES))}")
    src = MESHES[name]
    if src.archive is None:
        return extract_files(src.package, [src.path, *src.extra_files])[0]
    target = apt_cache_dir() / src.package / "unpacked" / src.path
    if target.exists():
        return target
    archive = extract_from_deb(src.package, src.archive)
    with tarfile.open(archive) as tar:
        try:
            info = tar.getmember(src.path)
        except KeyError as exc:
            raise NotInPackageError(f"{src.path} is not in {archive}") from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        data = tar.extractfile(info).read()
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def mesh_source_for(path: Path) -> MeshSource | None:
    """The registry entry a fetched file came from, or None for a user's own file."""
    path = Path(path).resolve()
    for src in MESHES.values():
        if path.name == Path(src.path).name and apt_cache_dir().resolve() in path.parents:
            return src
    return None
