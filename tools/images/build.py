#!/usr/bin/env python3
"""Builds the vpblu-controller and vpblu-daemon container images without a
registry and without a container engine.

Each image is one layer: a distroless-like root filesystem assembled from
this (Debian) machine -- the binaries, the shared libraries `ldd` says they
load, /etc/passwd and /etc/group with the nonroot user 65532, the CA
bundle -- plus, in the daemon image, nft (with its libraries) and
wireguard-go. Written as:

  OUT/NAME/                OCI image layout (oci-layout, index.json, blobs/)
  OUT/NAME-TAG.tar         the same layout plus a docker-save manifest.json,
                           so `docker load`, `kind load image-archive` and
                           `ctr import` all take it

usage: build.py --bin-dir DIR --out DIR --tag TAG --wireguard-go PATH
                [--max-mb controller=60,daemon=120]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile

NONROOT = 65532
PATH_ENV = "PATH=/usr/local/bin:/usr/bin:/usr/sbin"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Debian bookworm is merged-/usr: /lib, /lib64, /bin, /sbin are links.
MERGED_USR = {"lib": "usr/lib", "lib64": "usr/lib64", "bin": "usr/bin", "sbin": "usr/sbin"}


class ImageError(Exception):
    """What went wrong, said so that the fix is clear."""


def host_path_chain(path):
    """The host files `path` goes through: each symlink on the way, then the
    regular file it ends at (all as absolute paths with their directories
    resolved)."""
    chain = []
    seen = set()
    current = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    while current not in seen:
        seen.add(current)
        chain.append(current)
        if not os.path.islink(current):
            return chain
        target = os.readlink(current)
        nxt = target if os.path.isabs(target) else os.path.join(os.path.dirname(current), target)
        current = os.path.join(os.path.realpath(os.path.dirname(nxt)), os.path.basename(nxt))
    raise ImageError(f"{path}: symlink loop through {current}")


def copy_host_file(root, path):
    """Copies `path` into `root` at the same place, with every symlink on
    the way recreated."""
    for hop in host_path_chain(path):
        dest = os.path.join(root, hop.lstrip("/"))
        if os.path.lexists(dest):
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.islink(hop):
            os.symlink(os.readlink(hop), dest)
        else:
            shutil.copy2(hop, dest)


def shared_libraries(binary):
    """The libraries (and the loader) `binary` loads, from ldd; none for a
    static binary."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        raise ImageError(f"ldd {binary} failed: {text.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=> not found" in line:
            raise ImageError(f"{binary} needs {line.split()[0]}, which this machine does not have")
        if "=>" in line:
            path = line.split("=>", 1)[1].split("(")[0].strip()
        else:
            path = line.split("(")[0].strip()
        if path.startswith("/"):
            libs.append(path)
    return libs


def install_binary(root, source, dest, strip):
    """Copies an ELF into `root` at `dest` (stripped of debug info when
    asked: debug binaries carry hundreds of MB of it) with its libraries."""
    target = os.path.join(root, dest.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if strip:
        subprocess.run(["strip", "--strip-debug", "-o", target, source], check=True)
    else:
        shutil.copy2(source, target)
    os.chmod(target, 0o755)
    for lib in shared_libraries(source):
        copy_host_file(root, lib)


def base_rootfs(root):
    """The distroless-like base: merged-/usr links, users, CA bundle, /tmp."""
    for link, target in MERGED_USR.items():
        os.makedirs(os.path.join(root, target), exist_ok=True)
        os.symlink(target, os.path.join(root, link))
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    with open(os.path.join(etc, "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/sbin/nologin\n")
        f.write(f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n")
    with open(os.path.join(etc, "group"), "w") as f:
        f.write(f"root:x:0:\nnonroot:x:{NONROOT}:\n")
    with open(os.path.join(etc, "nsswitch.conf"), "w") as f:
        f.write("passwd: files\ngroup: files\nhosts: files dns\n")
    if not os.path.isfile(CA_BUNDLE):
        raise ImageError(f"{CA_BUNDLE} is missing: apt-get install ca-certificates")
    os.makedirs(os.path.join(root, "etc/ssl/certs"), exist_ok=True)
    shutil.copy2(CA_BUNDLE, os.path.join(root, CA_BUNDLE.lstrip("/")))
    for d, mode in (("tmp", 0o1777), ("root", 0o700), ("home/nonroot", 0o700), ("var/run", 0o755)):
        os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, d), mode)


def layer_tar(root, epoch):
    """The root filesystem as a reproducible tar: sorted, fixed times,
    root-owned except the nonroot home."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            entries = sorted(dirnames + filenames)
            for name in entries:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root)
                info = tar.gettarinfo(full, arcname=rel)
                info.mtime = epoch
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if rel == "home/nonroot":
                    info.uid = info.gid = NONROOT
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            # os.walk does not descend into symlinked directories: good.
    return buf.getvalue()


def blob(layout, data):
    """Stores `data` under blobs/sha256/ and returns its descriptor fields."""
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_image(out, name, tag, root, user, entrypoint, epoch, revision):
    """Writes OUT/NAME (OCI layout) and OUT/NAME-TAG.tar; returns sizes."""
    layout = os.path.join(out, name)
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(layout)
    tar_bytes = layer_tar(root, epoch)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=9) as g:
        g.write(tar_bytes)
    layer = blob(layout, gz.getvalue())
    created = subprocess.run(
        ["date", "-u", "-d", f"@{epoch}", "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True, text=True, check=True
    ).stdout.strip()
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": user,
            "Entrypoint": entrypoint,
            "Env": [PATH_ENV, f"SSL_CERT_FILE={CA_BUNDLE}"],
            "WorkingDir": "/",
            "Labels": {
                "org.opencontainers.image.title": name,
                "org.opencontainers.image.version": tag,
                "org.opencontainers.image.revision": revision,
                "org.opencontainers.image.licenses": "Apache-2.0",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"]},
        "history": [{"created": created, "created_by": "tools/images/build.py"}],
    }
    config_desc = blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    manifest_desc = blob(layout, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "annotations": {
                    "org.opencontainers.image.ref.name": tag,
                    "io.containerd.image.name": f"docker.io/library/{name}:{tag}",
                },
            }
        ],
    }
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    # docker-save's manifest.json beside the OCI files (what docker >= 25
    # writes itself): docker load reads it, ctr import and kind the index.
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{config_desc['digest'][7:]}",
            "RepoTags": [f"{name}:{tag}", f"{name}:latest"],
            "Layers": [f"blobs/sha256/{layer['digest'][7:]}"],
        }
    ]
    with open(os.path.join(layout, "manifest.json"), "w") as f:
        json.dump(docker_manifest, f)
    archive = os.path.join(out, f"{name}-{tag}.tar")
    with tarfile.open(archive, "w") as tar:
        for dirpath, dirnames, filenames in os.walk(layout):
            dirnames.sort()
            for fname in sorted(filenames):
                full = os.path.join(dirpath, fname)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, layout))
                info.mtime = epoch
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(full, "rb") as f:
                    tar.addfile(info, f)
    return {
        "compressed": layer["size"] + config_desc["size"] + manifest_desc["size"],
        "uncompressed": len(tar_bytes),
        "archive": archive,
        "layout": layout,
    }


def require_file(path, what, fix):
    if not os.path.isfile(path):
        raise ImageError(f"{what} {path} does not exist: {fix}")


def build(args):
    controller = os.path.join(args.bin_dir, "vpblu-controller")
    daemon = os.path.join(args.bin_dir, "vpblu-daemon")
    build_cmd = "cargo build --release -p vpblu-controller -p vpblu-daemon (make images does)"
    require_file(controller, "the controller binary", build_cmd)
    require_file(daemon, "the daemon binary", build_cmd)
    require_file(args.wireguard_go, "wireguard-go", "run tools/wireguard-go/build.sh")
    nft = shutil.which("nft") or "/usr/sbin/nft"
    require_file(nft, "nft", "apt-get install nftables (tools/install-deps.sh does)")
    os.makedirs(args.out, exist_ok=True)
    limits = dict(item.split("=") for item in args.max_mb.split(",")) if args.max_mb else {}
    images = {
        "vpblu-controller": {
            "user": f"{NONROOT}:{NONROOT}",
            "files": [(controller, "/usr/local/bin/vpblu-controller")],
        },
        # Root: the daemon configures the node (its capabilities come from
        # the DaemonSet's securityContext).
        "vpblu-daemon": {
            "user": "0:0",
            "files": [
                (daemon, "/usr/local/bin/vpblu-daemon"),
                (args.wireguard_go, "/usr/local/bin/wireguard-go"),
                (nft, "/usr/sbin/nft"),
            ],
        },
    }
    results = {}
    for name, spec in images.items():
        with tempfile.TemporaryDirectory(prefix=f"{name}-rootfs-") as root:
            base_rootfs(root)
            for source, dest in spec["files"]:
                install_binary(root, source, dest, strip=True)
            entrypoint = [spec["files"][0][1]]
            results[name] = write_image(
                args.out, name, args.tag, root, spec["user"], entrypoint, args.epoch, args.revision
            )
    failed = []
    for name, r in results.items():
        mb_c, mb_u = r["compressed"] / 1e6, r["uncompressed"] / 1e6
        print(f"{name}:{args.tag}  {mb_c:6.1f} MB compressed  {mb_u:6.1f} MB uncompressed  {r['archive']}")
        short = name.removeprefix("vpblu-")
        if short in limits and mb_u >= float(limits[short]):
            failed.append(f"{name} is {mb_u:.1f} MB uncompressed, over its {limits[short]} MB budget")
    if failed:
        raise ImageError("; ".join(failed))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--wireguard-go", required=True)
    parser.add_argument("--max-mb", default="")
    parser.add_argument("--epoch", type=int, default=0, help="file and image times (seconds)")
    parser.add_argument("--revision", default="")
    args = parser.parse_args()
    try:
        build(args)
    except (ImageError, subprocess.CalledProcessError, OSError) as e:
        print(f"images: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
