"""Cached setup for the kernel oracle: host packages, a Debian kernel, a tiny initramfs.

Nothing is installed into the host kernel: the kernel package is fetched with
`apt-get download` and unpacked with `dpkg -x` into the cache. The cache holds only the .deb,
the vmlinuz and one initramfs per (kernel, module list, init script) so a warm start costs
nothing but the qemu boot. See tests/kernel/README.md.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "ECARCHIVE_VM_CACHE"
ACCEL_ENV = "ECARCHIVE_VM_ACCEL"
DEFAULT_CACHE = Path.home() / ".cache" / "ecarchive-vm"
KERNEL_META_PACKAGE = "linux-image-amd64"
APT_TIMEOUT = 900
PROBE_TIMEOUT = 20
KERNEL_DIR = re.compile(r"^\d+\.\d+\.\d+-\d+-[a-z0-9]+$")  # 6.1.0-56-amd64

# Debian package -> a file it provides; a missing file means "install the package".
HOST_PACKAGES = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "ecryptfs-utils": "/usr/bin/ecryptfs-add-passphrase",
    "keyutils": "/usr/bin/keyctl",
    "busybox-static": "/bin/busybox",
    "libarchive-tools": "/usr/bin/bsdtar",
    "e2fsprogs": "/usr/sbin/mkfs.ext4",
    "kmod": "/usr/sbin/depmod",
    "cpio": "/usr/bin/cpio",
    "genisoimage": "/usr/bin/genisoimage",
}

# Loaded in this order (after their modules.dep dependencies); built-ins are skipped and a
# module that refuses to load (aesni_intel without AES-NI) is only reported on the console.
GUEST_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
    "crc32c_generic",
    "crc32c_intel",
    "ext4",
    "aes_generic",
    "aesni_intel",
    "ecb",
    "cbc",
    "md5",
    "sha512_generic",
    "ecryptfs",
    "loop",
    "isofs",
)

INIT_SCRIPT = Path(__file__).with_name("guest_init.sh")


class VmUnavailable(RuntimeError):
    """The kernel oracle cannot run on this machine (no qemu, no apt, offline...)."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    """Everything qemu needs to boot the oracle guest."""

    kernel_version: str
    vmlinuz: Path
    initramfs: Path
    accel: str


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise setup between concurrent pytest processes sharing one cache."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], *, cwd: Path | None = None, timeout: int = APT_TIMEOUT) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VmUnavailable(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise VmUnavailable(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _apt(argv: list[str], *, cwd: Path | None = None) -> str:
    """Run an apt command; on failure refresh the package lists once (root) and retry, since a
    fresh CI image or a moved kernel ABI leaves stale lists behind."""
    try:
        return _run(argv, cwd=cwd)
    except VmUnavailable:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update"])
        return _run(argv, cwd=cwd)


def _missing_packages() -> list[str]:
    missing = [pkg for pkg, probe in HOST_PACKAGES.items() if not Path(probe).exists()]
    # /bin/busybox may be the dynamically linked `busybox` package, useless in an initramfs.
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "busybox-static"],
        capture_output=True,
        text=True,
        check=False,
    )
    if "install ok installed" not in status.stdout and "busybox-static" not in missing:
        missing.append("busybox-static")
    return missing


def ensure_host_packages() -> None:
    """Install the missing host tools with apt (root only); never touches the host kernel."""
    missing = _missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise VmUnavailable(f"missing packages {missing} and cannot apt-get install as non-root")
    apt_install(missing)


def apt_install(packages: list[str]) -> None:
    """apt-get install (root), refreshing stale package lists once; tests/support/tools.py
    installs the interop tools with it too."""
    _apt(["apt-get", "install", "-y", "--no-install-recommends", *packages])


def _resolve_kernel_package() -> str:
    """`linux-image-6.1.0-<N>-amd64`, the current target of the meta package."""
    out = _apt(["apt-cache", "depends", KERNEL_META_PACKAGE])
    match = re.search(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if match is None:
        raise VmUnavailable(f"cannot resolve {KERNEL_META_PACKAGE}: {out!r}")
    return match.group(1)


def _cached_deb(kernels: Path) -> Path | None:
    debs = sorted(kernels.glob("linux-image-*.deb"))
    return debs[-1] if debs else None


def _fetch_kernel_deb(kernels: Path) -> Path:
    """Download the kernel .deb once; offline, reuse whatever kernel the cache holds."""
    kernels.mkdir(parents=True, exist_ok=True)
    try:
        package = _resolve_kernel_package()
    except VmUnavailable:
        cached = _cached_deb(kernels)
        if cached is None:
            raise
        return cached
    existing = sorted(kernels.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    with tempfile.TemporaryDirectory(dir=kernels) as tmp:
        # _apt cannot write into root-only directories; download as root into a temp dir.
        _apt(["apt-get", "download", package], cwd=Path(tmp))
        try:
            (deb,) = Path(tmp).glob("*.deb")
        except ValueError as exc:
            raise VmUnavailable(f"apt-get download {package} produced no single .deb") from exc
        return Path(shutil.move(deb, kernels / deb.name))


def _kernel_version(deb: Path) -> str:
    # linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb -> 6.1.0-56-amd64
    return deb.name.split("_", 1)[0].removeprefix("linux-image-")


def _module_load_order(modroot: Path) -> list[str]:
    """Relative .ko paths for GUEST_MODULES and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (modroot / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.removesuffix(".ko").replace("-", "_"): p for p in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in GUEST_MODULES:
        found = by_name.get(name.replace("-", "_"))
        if found is not None:  # None: built into this kernel
            visit(found)
    return order


def _initramfs_key(version: str) -> str:
    digest = hashlib.sha256()
    digest.update(version.encode())
    digest.update("\n".join(GUEST_MODULES).encode())
    digest.update(INIT_SCRIPT.read_bytes())
    digest.update(Path("/bin/busybox").read_bytes())
    return digest.hexdigest()[:16]


def _build_initramfs(deb: Path, version: str, vmlinuz: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        unpacked = Path(tmp) / "kernel"
        _run(["dpkg", "-x", str(deb), str(unpacked)])
        _run(["depmod", "-b", str(unpacked), version])
        shutil.copyfile(unpacked / "boot" / f"vmlinuz-{version}", vmlinuz)
        modroot = unpacked / "lib" / "modules" / version
        order = _module_load_order(modroot)

        root = Path(tmp) / "root"
        for sub in ("bin", "dev", "proc", "sys", "host", "modules"):
            (root / sub).mkdir(parents=True)
        shutil.copy2("/bin/busybox", root / "bin" / "busybox")
        shutil.copy2(INIT_SCRIPT, root / "init")
        (root / "init").chmod(0o755)
        names = []
        for index, rel in enumerate(order):
            # A numeric prefix keeps the load order without a second list file.
            name = f"{index:02d}-{Path(rel).name}"
            shutil.copyfile(modroot / rel, root / "modules" / name)
            names.append(name)
        (root / "modules" / "order").write_text("\n".join(names) + "\n")

        listing = "\n".join(str(p.relative_to(root)) for p in sorted(root.rglob("*"))).encode()
        cpio = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            cwd=root,
            input=listing,
            capture_output=True,
            check=False,
        )
        if cpio.returncode != 0:
            raise VmUnavailable(f"cpio failed: {cpio.stderr.decode(errors='replace')}")
        partial = out.with_suffix(".partial")
        with gzip.open(partial, "wb", compresslevel=1) as gz:
            shutil.copyfileobj(io.BytesIO(cpio.stdout), gz)
        partial.rename(out)


def _prune(root: Path, current: Path, keep: set[Path]) -> None:
    """Drop superseded kernels and initramfs images so the cache stays ~90 MB. Only touches
    what this module made (the cache root may be a shared directory)."""
    for path in [*root.glob("kernels/linux-image-*.deb"), *current.glob("initramfs-*.cpio.gz")]:
        if path not in keep:
            path.unlink(missing_ok=True)
    for path in root.iterdir():
        if path != current and KERNEL_DIR.match(path.name) and (path / "vmlinuz").exists():
            shutil.rmtree(path, ignore_errors=True)


def _probe_kvm(image: GuestImage) -> str:
    """'kvm' only if a stock Debian kernel really boots under KVM here, else 'tcg'.

    The probe boots the initramfs with `ecarchive.probe` so /init powers off at once.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(image.vmlinuz),
        "-initrd",
        str(image.initramfs),
        "-append",
        "console=ttyS0 panic=-1 ecarchive.probe",
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return "tcg"
    return "kvm" if "ECARCHIVE-VM: probe ok" in done.stdout else "tcg"


def prepare() -> GuestImage:
    """Return a bootable guest, downloading and building whatever the cache lacks."""
    try:
        return _prepare()
    except OSError as exc:  # unwritable cache, full disk...
        raise VmUnavailable(f"cannot prepare the guest in {cache_dir()}: {exc}") from exc


def _prepare() -> GuestImage:
    ensure_host_packages()
    root = cache_dir()
    with _locked(root):
        deb = _fetch_kernel_deb(root / "kernels")
        version = _kernel_version(deb)
        kdir = root / version
        kdir.mkdir(exist_ok=True)
        vmlinuz = kdir / "vmlinuz"
        initramfs = kdir / f"initramfs-{_initramfs_key(version)}.cpio.gz"
        if not initramfs.exists() or not vmlinuz.exists():
            _build_initramfs(deb, version, vmlinuz, initramfs)
            _prune(root, kdir, keep={deb, initramfs})
        forced = os.environ.get(ACCEL_ENV)
        image = GuestImage(version, vmlinuz, initramfs, forced or "tcg")
        if forced:
            return image
        accel_file = kdir / "accel"
        if not accel_file.exists():
            accel_file.write_text(_probe_kvm(image))
        return dataclasses.replace(image, accel=accel_file.read_text().strip())
