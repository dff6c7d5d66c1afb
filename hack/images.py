"""Container images built on this machine, without a registry, for the local real node.

    python -m hack.images build        # base, pause, modelserver and operator (cached)

The base is a Debian root filesystem made by debootstrap from the mirror apt already uses,
turned into an OCI image by umoci. The project's own Dockerfiles (serving-image/Dockerfile,
operator/Dockerfile) are then built by buildah with that base passed as their PYTHON_IMAGE
build argument: the same files docker users build from the public Python image. Each image is
tagged with a hash of what it is built from, so an unchanged image is never rebuilt, and saved
as an OCI archive that `ctr images import` loads into containerd.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGISTRY = "localhost/modelrollout"
SUITE = "bookworm"
# python-is-python3: the Dockerfiles call `python`, as the public Python images provide it.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "libstdc++6")
# Read-only during RUN steps only (never part of an image): how this machine trusts and reaches
# its package registries.
BUILD_MOUNTS = (Path("/etc/ssl/certs/ca-certificates.crt"), Path("/etc/pip.conf"))


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    root = os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout"
    return Path(root) / "images"


@dataclass(frozen=True)
class Image:
    name: str  # modelserver, operator, pause, base
    ref: str  # localhost/modelrollout/NAME:KEY
    archive: Path  # OCI archive for `ctr images import`

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


def _hash(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def tree_hash(root: Path) -> bytes:
    """Paths and contents of every file in a build context, except caches Python writes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part == "__pycache__" or part.endswith(".egg-info") for part in rel.parts):
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.digest()


def apt_mirror() -> str:
    """The Debian mirror apt uses here (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if path.suffix not in ("", ".list", ".sources") or not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    raise RuntimeError(
        "no Debian mirror found in /etc/apt/sources.list{,.d}: debootstrap needs one"
    )


class Builder:
    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache or cache_dir()
        self.cache.mkdir(parents=True, exist_ok=True)

    def buildah(self, *args: str, capture: bool = False) -> str:
        cmd = [
            "buildah",
            "--root",
            str(self.cache / "buildah"),
            "--runroot",
            "/run/modelrollout-buildah",
            "--storage-driver",
            "overlay",
            *args,
        ]
        # Progress goes to stderr: stdout is for the image references this module prints.
        out = subprocess.run(
            cmd,
            check=False,
            text=True,
            stdout=subprocess.PIPE if capture else sys.stderr,
            stderr=subprocess.PIPE if capture else None,
        )
        if out.returncode != 0:
            detail = (out.stderr or "").strip()[-2000:] if capture else "see the output above"
            raise RuntimeError(f"buildah {args[0]} failed ({detail})")
        return out.stdout or ""

    def _exists(self, image: Image) -> bool:
        return image.archive.exists()

    def _export(self, image: Image) -> None:
        part = image.archive.with_suffix(".part")
        part.unlink(missing_ok=True)
        # The archive's ref name is the tag; `ctr import --base-name` puts the repository back.
        self.buildah("push", "--quiet", image.ref, f"oci-archive:{part}:{image.tag}")
        part.rename(image.archive)

    def base(self) -> Image:
        key = _hash(SUITE.encode(), " ".join(BASE_PACKAGES).encode())
        image = Image("base", f"{REGISTRY}/base:{key}", self.cache / f"base-{key}.tar")
        if self._exists(image) and self._in_storage(image):
            return image
        log(f"building the base image {image.ref} with debootstrap (a few minutes) ...")
        # buildah names an image pulled from an OCI layout after the layout's path, which
        # must then be a valid reference: no dots, no upper case.
        work = Path("/tmp/modelrollout-base")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            rootfs, layout = work / "rootfs", work / "oci"
            _run(
                "nice",
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                apt_mirror(),
            )
            for cache in ("var/lib/apt/lists", "var/cache/apt"):
                shutil.rmtree(rootfs / cache, ignore_errors=True)
                (rootfs / cache).mkdir(parents=True)
            _run("umoci", "init", "--layout", str(layout))
            _run("umoci", "new", "--image", f"{layout}:base")
            _run("umoci", "insert", "--image", f"{layout}:base", str(rootfs), "/")
            path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            _run("umoci", "config", "--image", f"{layout}:base", "--config.env", path)
            _run("umoci", "config", "--image", f"{layout}:base", "--config.cmd", "python3")
            pulled = self.buildah("pull", "--quiet", f"oci:{layout}:base", capture=True)
            self.buildah("tag", pulled.strip(), image.ref)
            self.buildah("rmi", f"localhost{layout}:latest", capture=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._export(image)
        return image

    def _in_storage(self, image: Image) -> bool:
        out = subprocess.run(
            [
                "buildah",
                "--root",
                str(self.cache / "buildah"),
                "--runroot",
                "/run/modelrollout-buildah",
                "--storage-driver",
                "overlay",
                "inspect",
                image.ref,
            ],
            capture_output=True,
            check=False,
        )
        return out.returncode == 0

    def dockerfile(
        self, name: str, dockerfile: Path, context: Path, base: Image | None = None
    ) -> Image:
        """Build a Dockerfile with the base image as its PYTHON_IMAGE argument."""
        parts = [dockerfile.read_bytes(), tree_hash(context)]
        if base is not None:
            parts.append(base.ref.encode())
        key = _hash(*parts)
        image = Image(name, f"{REGISTRY}/{name}:{key}", self.cache / f"{name}-{key}.tar")
        if self._exists(image):
            return image
        log(f"building {image.ref} from {dockerfile.name} in {context.name}/ ...")
        args = ["bud", "--isolation", "chroot", "--pull-never", "--layers", "--quiet"]
        for mount in BUILD_MOUNTS:
            if mount.exists():
                args += ["--volume", f"{mount}:{mount}:ro"]
        if base is not None:
            args += ["--build-arg", f"PYTHON_IMAGE={base.ref}"]
        self.buildah(*args, "-t", image.ref, "-f", str(dockerfile), str(context))
        self._export(image)
        return image

    def pause(self) -> Image:
        source = REPO / "hack" / "pause"
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp)
            shutil.copy(source / "Dockerfile", context / "Dockerfile")
            _run("gcc", "-static", "-Os", "-o", str(context / "pause"), str(source / "pause.c"))
            # Hash the source, not the binary: a static build is not byte-reproducible.
            (context / "pause.c").write_bytes((source / "pause.c").read_bytes())
            return self.dockerfile("pause", context / "Dockerfile", context)

    def all(self) -> dict[str, Image]:
        base = self.base()
        return {
            "pause": self.pause(),
            "modelserver": self.dockerfile(
                "modelserver", REPO / "serving-image" / "Dockerfile", REPO / "serving-image", base
            ),
            "operator": self.dockerfile(
                "operator", REPO / "operator" / "Dockerfile", REPO / "operator", base
            ),
        }


def _run(*cmd: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed: {out.stderr.strip()[-2000:]}")


def import_into(ctr: Sequence[str], images: Sequence[Image]) -> None:
    """Load images into containerd's k8s.io namespace unless already there. `ctr` is the
    command prefix with the socket address."""
    present = subprocess.run(
        [*ctr, "-n", "k8s.io", "images", "ls", "-q"], capture_output=True, text=True, check=True
    ).stdout.split()
    for image in images:
        if image.ref in present:
            continue
        # --digests=false and a base name: an untagged import leaves a stale CRI cache entry.
        subprocess.run(
            [
                *ctr,
                "-n",
                "k8s.io",
                "images",
                "import",
                "--base-name",
                image.repository,
                "--digests=false",
                str(image.archive),
            ],
            check=True,
            capture_output=True,
        )
        log(f"imported {image.ref}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.images", description=__doc__)
    parser.add_argument("command", choices=["build"])
    parser.parse_args(argv)
    for name, image in Builder().all().items():
        print(f"{name}={image.ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
