"""Run batches of shell jobs inside one qemu boot of a stock Debian kernel (the oracle).

    image = vmsetup.prepare()
    boot = run_jobs(image, [Job("a", "walk /etc $JOB/etc.json", inputs={...})], workdir)
    boot.results["a"].returncode, boot.results["a"].file("etc.json"), boot.results["a"].dmesg

Each job gets its own directory on a read-write 9p share (inputs are copied there, outputs are
read back from there), a fresh directory on an ext4 scratch disk, and its own slice of the
kernel log: the driver clears the ring buffer after every job, so an eCryptfs complaint is
attributed to the job that caused it. Keys and leftover mounts are cleared between jobs.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.kernel.vmsetup import GuestImage, VmUnavailable

HERE = Path(__file__).parent
GUEST_LIB = HERE / "guest_lib.sh"
GUEST_LOOP = HERE / "guest_driver.sh"
TREES = HERE.parent / "support" / "trees.py"
GUEST_JOB_ROOT = "/tmp/job"
GUEST_HOST_ROOT = "/run/host-root"  # the host root without the guest's mounts on top
SCRATCH_BYTES = 4 << 30  # sparse; only what the jobs write is allocated
GUEST_RAM_MIB = 1024
BOOT_ALLOWANCE = 120  # seconds on top of the jobs' own timeouts (slow TCG boots, busy hosts)
DEFAULT_JOB_TIMEOUT = 300
JOB_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
DONE_MARKER = "all-jobs-done"
MAX_DISKS = 26  # /dev/vda../dev/vdz


class VmError(RuntimeError):
    """The guest did not finish its batch (timeout, crash, broken setup)."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One shell snippet to run in the guest (see guest_lib.sh for its environment).

    The guest sees the host root read-only, but with its own tmpfs on /tmp: host files under
    /tmp (pytest's tmp_path) are invisible there, so pass them as `inputs` (name -> file or
    directory, copied into $JOB). `images` become read-only virtio disks $IMAGE0, $IMAGE1...
    """

    name: str
    script: str
    inputs: Mapping[str, Path] = dataclasses.field(default_factory=dict)
    images: Sequence[Path] = ()
    timeout: int = DEFAULT_JOB_TIMEOUT


@dataclasses.dataclass(frozen=True)
class JobResult:
    name: str
    returncode: int | None  # None: the job never finished
    log: str
    dmesg: str
    dir: Path
    seconds: float  # guest wall time of the job itself

    def file(self, name: str) -> Path:
        return self.dir / name

    def ecryptfs_dmesg(self, part: str | None = None) -> list[str]:
        """Kernel lines about eCryptfs; a wrong key mounts fine and only complains here.

        `part`: the slice saved by `checkpoint PART` in the job; default the job's tail.
        """
        if part is not None and not (self.dir / f"dmesg-{part}.txt").exists():
            raise AssertionError(f"job {self.name} never reached checkpoint {part}")
        text = self.dmesg if part is None else _read(self.dir / f"dmesg-{part}.txt")
        return [line for line in text.splitlines() if "ecryptfs" in line.lower()]

    def describe(self) -> str:
        return (
            f"job {self.name} rc={self.returncode}\n--- log ---\n{self.log}\n"
            f"--- dmesg ---\n{self.dmesg}"
        )


@dataclasses.dataclass(frozen=True)
class Boot:
    results: dict[str, JobResult]
    console: str
    boot_dmesg: str
    seconds: float
    accel: str

    def summary(self) -> str:
        jobs = ", ".join(f"{r.name} {r.seconds:.1f}s" for r in self.results.values())
        return f"oracle boot ({self.accel}) {self.seconds:.1f}s: {jobs}"


def _driver(jobs: Sequence[Job], python: str) -> str:
    """The guest-side script /init runs chrooted into the host root (see guest_driver.sh)."""
    lines = [
        f"export PYTHON={shlex.quote(python)} TREES={GUEST_JOB_ROOT}/trees.py",
        f". {GUEST_JOB_ROOT}/loop.sh",
    ]
    disk = 1  # vda is the scratch disk
    if disk + sum(len(job.images) for job in jobs) > MAX_DISKS:
        raise ValueError(f"at most {MAX_DISKS - 1} images per boot (vdb..vdz)")
    for job in jobs:
        images = []
        for index in range(len(job.images)):
            images.append(f"IMAGE{index}=/dev/vd{chr(ord('a') + disk)}")
            disk += 1
        lines.append(" ".join(["run_job", job.name, str(job.timeout), *images]))
    lines += [
        "sync",
        "umount /tmp/scratch",
        f"echo done > {GUEST_JOB_ROOT}/{DONE_MARKER}",
        'say "all jobs done"',
    ]
    return "\n".join(lines) + "\n"


def _qemu_argv(image: GuestImage, share: Path, disks: Sequence[tuple[Path, bool]]) -> list[str]:
    accel = (
        ["-accel", "kvm", "-cpu", "host"]
        if image.accel == "kvm"
        else ["-accel", "tcg", "-cpu", "max"]
    )
    argv = [
        "qemu-system-x86_64",
        *accel,
        "-smp",
        "2",
        "-m",
        str(GUEST_RAM_MIB),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{share / 'console.log'}",
        "-kernel",
        str(image.vmlinuz),
        "-initrd",
        str(image.initramfs),
        "-append",
        "console=ttyS0 panic=-1 quiet loglevel=4",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={share},mount_tag=jobs,security_model=none,multidevs=remap",
    ]
    for path, readonly in disks:
        ro = ",readonly=on" if readonly else ""
        argv += ["-drive", f"file={path},format=raw,if=virtio,cache=unsafe{ro}"]
    return argv


def _make_scratch(path: Path) -> None:
    with path.open("wb") as f:
        f.truncate(SCRATCH_BYTES)
    # 256-byte inodes: nanosecond and post-2038 timestamps (small file systems default to 128).
    done = subprocess.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-I",
            "256",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,nodiscard",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise VmUnavailable(f"mkfs.ext4 failed: {done.stderr}")


def guest_path(path: str) -> str:
    """`path` as the guest reaches it: the host's /tmp is hidden behind the guest's own tmpfs
    and visible under GUEST_HOST_ROOT (see guest_driver.sh)."""
    if path == "/tmp" or path.startswith("/tmp/"):
        return GUEST_HOST_ROOT + path
    return path


def guest_python() -> str:
    """This interpreter, virtualenv included, as the guest runs it. A virtualenv under /tmp
    works from its other path too: Python finds pyvenv.cfg beside the path it was run by."""
    return guest_path(sys.executable)


def _copy_input(src: Path, dst: Path) -> None:
    """Files are copied; directories with `cp -a` (hard links, fifos, modes, times)."""
    if not src.is_dir():
        shutil.copyfile(src, dst)
        return
    done = subprocess.run(
        ["cp", "-a", "--", str(src), str(dst)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise VmError(f"cannot copy {src} to the job share: {done.stderr}")


def _elapsed(jdir: Path) -> float:
    try:
        return float(_read(jdir / "ended")) - float(_read(jdir / "started"))
    except ValueError:
        return -1.0


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def run_jobs(
    image: GuestImage,
    jobs: Sequence[Job],
    workdir: Path,
    *,
    python: str | None = None,
) -> Boot:
    """Boot once, run `jobs` in order, return their results. `workdir` becomes the job share.

    Raises VmError if the guest does not reach the end of the batch; per-job failures are
    reported in the results instead.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names) or not all(JOB_NAME.match(n) for n in names):
        raise ValueError(f"job names must be unique and [A-Za-z0-9_.-]: {names}")
    share = workdir / "share"
    share.mkdir(parents=True)
    shutil.copyfile(GUEST_LIB, share / "lib.sh")
    shutil.copyfile(GUEST_LOOP, share / "loop.sh")
    shutil.copyfile(TREES, share / "trees.py")
    disks: list[tuple[Path, bool]] = [(workdir / "scratch.img", False)]
    _make_scratch(disks[0][0])
    for job in jobs:
        jdir = share / "jobs" / job.name
        jdir.mkdir(parents=True)
        (jdir / "script.sh").write_text(job.script)
        for name, src in job.inputs.items():
            _copy_input(src, jdir / name)
        disks += [(img, True) for img in job.images]
    (share / "driver.sh").write_text(_driver(jobs, python or guest_python()))

    timeout = BOOT_ALLOWANCE + sum(job.timeout + 10 for job in jobs)
    started = time.monotonic()
    try:
        subprocess.run(
            _qemu_argv(image, share, disks), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise VmError(
            f"guest exceeded {timeout}s; console tail:\n{_read(share / 'console.log')[-4000:]}"
        ) from exc
    except OSError as exc:
        raise VmUnavailable(f"cannot start qemu: {exc}") from exc
    seconds = time.monotonic() - started
    console = _read(share / "console.log")
    if not (share / DONE_MARKER).exists():
        raise VmError(f"guest stopped before finishing its jobs; console:\n{console[-6000:]}")
    results = {}
    for job in jobs:
        jdir = share / "jobs" / job.name
        rc_text = _read(jdir / "rc").strip()
        results[job.name] = JobResult(
            name=job.name,
            returncode=int(rc_text) if rc_text else None,
            log=_read(jdir / "log.txt"),
            dmesg=_read(jdir / "dmesg.txt"),
            dir=jdir,
            seconds=_elapsed(jdir),
        )
    (workdir / "scratch.img").unlink()
    return Boot(results, console, _read(share / "boot-dmesg.txt"), seconds, image.accel)
