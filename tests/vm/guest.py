"""A throwaway Linux guest for tests that need a kernel this host does not give them (cgroup v2
with the memory and pids controllers): qemu boots the host's Debian kernel with a small
initramfs (busybox and the 9p modules), which mounts the host's / read-only and runs one command.

Run a command in it by hand: ``python tests/vm/guest.py -- python3 -c 'print(1)'``.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE.parent / ".vm-cache"  # gitignored: the initramfs, rebuilt when its inputs change
INIT = HERE / "init.sh"
KERNELS = (CACHE / "kernel", Path("/"))  # tests/vm/fetch_kernel.sh unpacks one in the first
MODULES = ("9p", "9pnet_virtio", "virtio_pci")  # with what they depend on, unless built in
SETUP = ("apt-get install qemu-system-x86 busybox-static, then tests/vm/fetch_kernel.sh; "
         "or `make vm-tools`")
BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")


@dataclass(frozen=True)
class Tools:
    qemu: str
    kernel: Path
    modules: Path  # /lib/modules/<the kernel's release>
    busybox: Path
    accel: str  # "kvm" or "tcg"


@dataclass(frozen=True)
class GuestRun:
    returncode: int | None  # the command's; None when the guest never reported one
    output: str  # the command's stdout and stderr
    console: str  # the kernel's and init's, on the serial console
    seconds: float

    def report(self) -> str:
        return (f"guest command exited {self.returncode} after {self.seconds:.1f}s\n"
                f"--- output ---\n{self.output[-6000:]}\n--- console ---\n{self.console[-3000:]}")


def find_tools() -> tuple[Tools | None, str]:
    """What booting a guest needs, or None and what is missing."""
    qemu = shutil.which("qemu-system-x86_64")
    busybox = next((Path(p) for p in BUSYBOX if _is_static(Path(p))), None)
    kernel = _kernel()
    missing = [what for what, found in (("qemu-system-x86_64", qemu),
                                        ("kernel with its modules", kernel),
                                        ("static busybox", busybox)) if found is None]
    if qemu is None or kernel is None or busybox is None:
        return None, f"no {', no '.join(missing)} ({SETUP})"
    return Tools(qemu, kernel[0], kernel[1], busybox, _accelerator()), ""


def _kernel() -> tuple[Path, Path] | None:
    """The newest readable kernel image with its modules: the unpacked one, else the host's."""
    for root in KERNELS:
        found = []
        for image in (root / "boot").glob("vmlinuz-*"):
            release = image.name[len("vmlinuz-"):]
            modules = root / "lib" / "modules" / release
            if (modules / "modules.order").exists() and os.access(image, os.R_OK):
                found.append((_release_key(release), image, modules))
        if found:
            _, image, modules = max(found)
            return image, modules
    return None


def _accelerator() -> str:
    """KVM where it can boot a stock kernel. A PVM host (kvm_pvm: KVM without hardware
    virtualisation, as in nested Firecracker VMs) boots only PVM guest kernels; a stock one
    hangs there, so such hosts emulate (TCG), about 30 times slower but the same kernel."""
    chosen = os.environ.get("STRATUS_VM_ACCEL")
    if chosen in ("kvm", "tcg"):
        return chosen
    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    return "kvm" if usable and not Path("/sys/module/kvm_pvm").exists() else "tcg"


def _is_static(path: Path) -> bool:
    """Whether ``path`` is an ELF program that needs no dynamic loader (no PT_INTERP)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
    except OSError:
        return False
    if not head.startswith(b"\x7fELF\x02"):  # 64-bit
        return False
    offset = int.from_bytes(head[0x20:0x28], "little")
    size, count = (int.from_bytes(head[o:o + 2], "little") for o in (0x36, 0x38))
    kinds = (int.from_bytes(head[offset + i * size:offset + i * size + 4], "little")
             for i in range(count))
    return 3 not in kinds  # PT_INTERP


def _release_key(release: str) -> tuple[int, ...]:
    numbers = [int(part) for part in release.replace("-", ".").split(".") if part.isdigit()]
    return tuple(numbers)


# -- the initramfs -------------------------------------------------------------------------
def module_files(modules_dir: Path, wanted: Iterable[str] = MODULES) -> list[Path]:
    """The module files to load, dependencies first (each module's own ``depends=``: an
    unpacked package has no modules.dep, which depmod makes at install); those built into the
    kernel (modules.builtin) are left out."""
    by_name = {_module_name(path): modules_dir / path
               for path in (modules_dir / "modules.order").read_text().split()}
    builtin_file = modules_dir / "modules.builtin"
    builtin = {_module_name(p) for p in builtin_file.read_text().split()} \
        if builtin_file.exists() else set()
    ordered: list[Path] = []

    def load(name: str) -> None:
        key = name.replace("-", "_")
        if key in builtin:
            return
        path = by_name.get(key)
        if path is None or not path.exists():
            raise FileNotFoundError(f"kernel module {name} is not in {modules_dir}")
        if path in ordered:
            return
        for need in _modinfo(_module_bytes(path)).get("depends", "").split(","):
            if need:
                load(need)
        ordered.append(path)

    for name in wanted:
        load(name)
    return ordered


def _modinfo(module: bytes) -> dict[str, str]:
    """The ``key=value`` strings of a kernel module's .modinfo section (a 64-bit ELF file)."""
    shoff = int.from_bytes(module[0x28:0x30], "little")
    size, count, names = (int.from_bytes(module[o:o + 2], "little") for o in (0x3A, 0x3C, 0x3E))
    headers = [module[shoff + i * size:shoff + (i + 1) * size] for i in range(count)]

    def span(header: bytes) -> bytes:
        offset, length = (int.from_bytes(header[o:o + 8], "little") for o in (0x18, 0x20))
        return module[offset:offset + length]

    strings = span(headers[names])
    for header in headers:
        start = int.from_bytes(header[:4], "little")
        if strings[start:strings.index(b"\0", start)] == b".modinfo":
            pairs = (item.partition(b"=") for item in span(header).split(b"\0") if item)
            return {key.decode(): value.decode(errors="replace") for key, _, value in pairs}
    return {}


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if not path.name.endswith(".ko"):
        raise ValueError(f"cannot unpack kernel module {path} (only .ko, .ko.xz and .ko.gz)")
    return data


def _cpio_entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
                inode: int = 0) -> bytes:
    """One entry of a "newc" cpio archive, the format the kernel unpacks as its initramfs."""
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
    return header + b"\0" * (-len(header) % 4) + data + b"\0" * (-len(data) % 4)


def build_initramfs(tools: Tools) -> Path:
    """The guest's initramfs in the cache, built once per kernel, busybox and init script."""
    modules = module_files(tools.modules)
    init = INIT.read_bytes()
    busybox = tools.busybox.read_bytes()
    digest = hashlib.sha256(init + hashlib.sha256(busybox).digest()
                            + str(modules).encode()).hexdigest()[:16]
    target = CACHE / f"initramfs-{tools.modules.name}-{digest}.cpio"
    if target.exists():
        return target
    directory, regular, executable = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, \
        stat.S_IFREG | 0o755
    entries = [(".", directory, b""), ("bin", directory, b""), ("dev", directory, b""),
               ("proc", directory, b""), ("sys", directory, b""), ("host", directory, b""),
               ("modules", directory, b""), ("init", executable, init),
               ("bin/busybox", executable, busybox),
               ("modules.order", regular, "".join(f"{p.name.split('.ko')[0]}.ko\n"
                                                  for p in modules).encode())]
    entries += [(f"modules/{p.name.split('.ko')[0]}.ko", regular, _module_bytes(p))
                for p in modules]
    archive = b"".join(_cpio_entry(name, mode, data, inode=index + 1)
                       for index, (name, mode, data) in enumerate(entries))
    archive += _cpio_entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1), inode=len(entries) + 1)
    archive += _cpio_entry("TRAILER!!!", 0)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}")  # parallel builders race safely
    partial.write_bytes(archive)
    os.replace(partial, target)
    for older in CACHE.glob("initramfs-*.cpio"):
        if older != target:
            older.unlink(missing_ok=True)
    return target


# -- running a command --------------------------------------------------------------------
def job_script(command: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    return f"cd {shlex.quote(cwd)} || exit 97\n{exports}exec {shlex.join(command)}\n"


def kept_from_tmp(paths: Sequence[str]) -> list[str]:
    """The directories right under the host's /tmp that hold any of ``paths``: the guest
    covers /tmp with a tmpfs of its own and shows these through it (a clone in /tmp, as CI's,
    with its venv)."""
    kept = set()
    for path in paths:
        if path:
            parts = Path(path).resolve().parts
            if len(parts) > 2 and parts[1] == "tmp":
                kept.add(f"/tmp/{parts[2]}")
    return sorted(kept)


def run(command: Sequence[str], *, cwd: str, env: Mapping[str, str], timeout: float = 300,
        memory_mb: int = 1024, cpus: int = 2, tools: Tools | None = None) -> GuestRun:
    """Boot a guest, run ``command`` in it as root (the host's / read-only, /tmp writable,
    cgroup2 with every controller at /sys/fs/cgroup) and power it off."""
    if tools is None:
        tools, reason = find_tools()
        if tools is None:
            raise RuntimeError(reason)
    initramfs = build_initramfs(tools)
    cpu = "host" if tools.accel == "kvm" else "max"
    accel = "kvm" if tools.accel == "kvm" else "tcg,thread=multi"
    with tempfile.TemporaryDirectory(prefix="stratus-vm-") as job:
        Path(job, "job.sh").write_text(job_script(command, str(Path(cwd).resolve()), env))
        Path(job, "keep").write_text("".join(f"{path}\n" for path in kept_from_tmp(
            [cwd, sys.prefix, sys.executable, *env.get("PYTHONPATH", "").split(":")])))
        qemu = [tools.qemu, "-accel", accel, "-cpu", cpu, "-m", str(memory_mb), "-smp", str(cpus),
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                "-no-reboot", "-kernel", str(tools.kernel), "-initrd", str(initramfs),
                "-append", "console=ttyS0 quiet cgroup_no_v1=all panic=-1",
                "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                           "multidevs=remap",
                "-virtfs", f"local,path={job},mount_tag=job,security_model=none"]
        started = time.monotonic()
        try:
            booted = subprocess.run(qemu, stdin=subprocess.DEVNULL, capture_output=True,
                                    timeout=timeout, check=False)
            console = (booted.stdout + booted.stderr).decode(errors="replace")
        except subprocess.TimeoutExpired as exc:
            console = ((exc.stdout or b"") + (exc.stderr or b"")).decode(errors="replace")
            console += f"\nstratus-vm: the guest did not power off within {timeout}s"
        seconds = time.monotonic() - started
        output = _read(Path(job, "output"))
        status = _read(Path(job, "status")).strip()
    return GuestRun(int(status) if status.isdigit() else None, output, console, seconds)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def guest_env(src: Path) -> dict[str, str]:
    """The environment a Python command gets in the guest: this checkout's code first."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp",
            "LANG": "C.UTF-8", "STRATUS_VM_GUEST": "1"}


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1:] if "--" in argv else argv
    if not command:
        print(__doc__)
        return 2
    src = HERE.parent.parent / "src"
    result = run(command, cwd=os.getcwd(), env=guest_env(src))
    print(result.report())
    return result.returncode if result.returncode is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
