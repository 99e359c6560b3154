"""Runs inside a chroot (tests/platforms/chroot_run.sh) with the box's own python3, stdlib only:
unpacks the offline zip, installs it with the plugin's install.sh (no network), runs both modules'
command lines and the plugin over nng as kuiperd would, and prints one JSON report as its last line.

    python3 box_check.py SHARE   (SHARE: the zip as defect.zip, images/, photos.txt, surfaces.txt, nng_host.py;
                                  on arm64 index-wheels/: pynng's wheel as the index has it)
"""
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

PLUGIN = "/work/defect"


def run(argv, env=None, timeout=1800):
    started = time.monotonic()
    done = subprocess.run(argv, cwd=PLUGIN, env=env, capture_output=True, text=True, timeout=timeout)
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-4000:],
            "seconds": round(time.monotonic() - started, 1)}


def with_answers(result):
    """A command line's run with its JSON lines as answers {image name: result} and ms [per image]."""
    if result["rc"] == 0:
        lines = [json.loads(line) for line in result.pop("stdout").splitlines() if line.strip()]
        result["answers"] = {os.path.basename(line["image"]): line["result"] for line in lines}
        result["ms"] = [line["ms"] for line in lines]
    return result


def names(listing):
    with open(listing) as f:
        return f.read().split()


def main(share):
    with zipfile.ZipFile(os.path.join(share, "defect.zip")) as z:
        z.extractall(PLUGIN)
    photos, surfaces = ([os.path.join(share, "images", name) for name in names(os.path.join(share, listing))]
                        for listing in ("photos.txt", "surfaces.txt"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    report = {"machine": os.uname().machine}
    if report["machine"] == "aarch64":  # everything below runs on a box without libatomic1
        report["libatomic_removed"] = remove_libatomic()
        report["libatomic_left"] = system_libatomic()
    # kuiperd's default pythonBin: install.sh finds python3 by itself.
    report["install"] = run(["/bin/sh", "install.sh"], env)
    output = report["install"]["stdout"]
    report["install"]["said"] = [line for line in output.splitlines() if line.startswith("defect install:")]
    report["install"]["stdout"] = output[-3000:]
    if report["install"]["rc"] != 0:
        print(json.dumps(report))
        return
    python = os.path.join(PLUGIN, ".venv", "bin", "python")
    report["python"] = run([python, "-c", "import platform; print(platform.python_version())"])["stdout"].strip()
    report["label"] = {}
    for runtime in ("litert", "openvino"):
        overlay = os.path.join(PLUGIN, f"runtime-{runtime}.json")
        with open(overlay, "w") as f:
            json.dump({"label": {"runtime": runtime}}, f)
        report["label"][runtime] = with_answers(
            run([python, "-X", "faulthandler", "label.py", *photos], {**env, "DEFECT_CONFIG": overlay}))
    report["inference"] = with_answers(run([python, "inference.py", *surfaces], env))
    # Over nng, as kuiperd runs it: bare python3 (main.py switches into the venv), the plugin's defaults.
    report["nng"] = run([python, os.path.join(share, "nng_check.py"), PLUGIN, photos[0], surfaces[0]], env)
    if report["machine"] == "aarch64":
        # Where pynng's libatomic.so.1 comes from once loaded (qemu-user shows the guest's own maps).
        report["libatomic_loaded"] = run([python, "-c", LOADED_LIBATOMIC], env)
        report["index_wheel"] = install_with_the_index_wheel(share, env)
    print(json.dumps(report))


LOADED_LIBATOMIC = ("import json, pynng\n"
                    "print(json.dumps(sorted({line.split()[-1] for line in open('/proc/self/maps')\n"
                    "                         if 'libatomic' in line})))")
LIBRARY_DIRS = ("/usr/lib/aarch64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib", "/lib")


def system_libatomic():
    """Every libatomic.so* the box's own library dirs hold."""
    return sorted({os.path.realpath(os.path.join(folder, name)) for folder in LIBRARY_DIRS if os.path.isdir(folder)
                   for name in os.listdir(folder) if name.startswith("libatomic.so")})


def remove_libatomic():
    """The rootfs is built without libatomic1; should a Debian package ever pull it in, it goes here."""
    removed = []
    for folder in LIBRARY_DIRS:
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.startswith("libatomic.so"):
                os.unlink(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
    return removed


def install_with_the_index_wheel(share, env):
    """Last: pynng's wheel as the index has it (no libatomic inside) on this box without libatomic1:
    install.sh must fail in one line that names the package, and leave no venv."""
    original = [name for name in os.listdir(os.path.join(share, "index-wheels")) if name.endswith(".whl")]
    wheels = os.path.join(PLUGIN, "wheels")
    for name in os.listdir(wheels):
        if name.startswith("pynng-"):
            os.unlink(os.path.join(wheels, name))
    for name in original:
        shutil.copy(os.path.join(share, "index-wheels", name), wheels)
    shutil.rmtree(os.path.join(PLUGIN, ".venv"))
    result = run(["/bin/sh", "install.sh"], env)
    result["venv_left"] = os.path.exists(os.path.join(PLUGIN, ".venv"))
    result["stdout"] = result["stdout"][-2000:]
    result["wheels"] = original
    return result


if __name__ == "__main__":
    main(sys.argv[1])
