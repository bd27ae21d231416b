"""Debian's packages for the emulated ARM64 runtime: apt-get under a configuration of our own (no root, the host's
apt and dpkg state untouched), reading and unpacking .debs with dpkg-deb, and what the unpacked arm64 sysroot
needs afterwards (links kept inside it, a stand-in /proc/cpuinfo, its glibc version)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

from distilforge.validate.arm64.errors import Arm64RuntimeError, Arm64UnavailableError
from distilforge.validate.arm64.recipe import _OFFLINE, _TIMEOUT, GLIBC_FALLBACK, KEYRING

# --- apt, under a configuration of our own ------------------------------------------------------------------------


class _Apt:
    """apt-get with its own configuration, sources, lists, cache and (empty) dpkg status under `where`: nothing
    of the host's apt or dpkg state is read or written, and no root is needed."""

    def __init__(self, where: Path, arch: str, sources: Sequence[tuple[str, str]]) -> None:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise Arm64UnavailableError(f"arm64 runtime: setting it up needs {tool} (a Debian or Ubuntu host), "
                                            f"and there is none on PATH")
        if not KEYRING.is_file():
            raise Arm64UnavailableError(f"arm64 runtime: setting it up needs Debian's archive keyring {KEYRING} "
                                        f"(apt-get install debian-archive-keyring)")
        self.where = where
        dirs = {d: where / d for d in ("etc/apt.conf.d", "etc/sources.list.d", "etc/preferences.d",
                                       "etc/trusted.gpg.d", "etc/auth.conf.d", "lists/partial",
                                       "cache/archives/partial", "log", "debs")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (where / "status").touch()
        (where / "sources.list").write_text("".join(f"deb [arch={arch} signed-by={KEYRING}] {uri} {suite} main\n"
                                                    for uri, suite in sources))
        settings = {
            "Dir::Etc::main": "/dev/null", "Dir::Etc::parts": dirs["etc/apt.conf.d"],
            "Dir::Etc::sourcelist": where / "sources.list", "Dir::Etc::sourceparts": dirs["etc/sources.list.d"],
            "Dir::Etc::preferences": where / "etc/preferences", "Dir::Etc::preferencesparts": dirs["etc/preferences.d"],
            "Dir::Etc::trusted": where / "etc/trusted.gpg", "Dir::Etc::trustedparts": dirs["etc/trusted.gpg.d"],
            "Dir::Etc::netrc": where / "etc/auth.conf", "Dir::Etc::netrcparts": dirs["etc/auth.conf.d"],
            "Dir::State": where, "Dir::State::lists": where / "lists", "Dir::State::status": where / "status",
            "Dir::Cache": where / "cache", "Dir::Cache::archives": where / "cache/archives",
            "Dir::Log": dirs["log"], "APT::Architecture": arch, "Acquire::Languages": "none",
            "Acquire::GzipIndexes": "true", "APT::Install-Recommends": "false", "APT::Install-Suggests": "false",
            "APT::Update::Error-Mode": "any",
        }
        lines = [f'{k} "{v}";' for k, v in settings.items()]
        lines.append(f'APT::Architectures {{ "{arch}"; }};')
        if os.geteuid() == 0:  # root's cache is not readable by apt's _apt sandbox user: say so, not warn
            lines.append('APT::Sandbox::User "root";')
        lines += _host_acquire_settings()
        self.config = where / "apt.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def _apt_get(self, *args: str, cwd: Path | None = None) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.config), "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        try:
            done = subprocess.run(["apt-get", "-q", "-y", *args], capture_output=True, text=True, env=env, cwd=cwd,
                                  timeout=_TIMEOUT["apt"])
        except subprocess.TimeoutExpired:
            raise Arm64UnavailableError(f"arm64 runtime: `apt-get {args[0]}` took more than {_TIMEOUT['apt']} s "
                                        f"(is Debian's registry reachable?)") from None
        text = done.stdout + "\n" + done.stderr
        lines = text.splitlines()
        failed = ([line for line in lines if line.startswith("E:")]
                  or [line for line in lines if line.startswith("W: Failed to fetch")]
                  or [f"{line} {after.strip()}" for line, after in zip(lines, [*lines[1:], ""], strict=True)
                      if line.startswith("Err:")])
        if done.returncode != 0 or failed:
            reason = (failed or [line for line in lines if line.strip()] or ["no output"])[0].strip()
            error = _OFFLINE.search(text) and Arm64UnavailableError or Arm64RuntimeError
            raise error(f"arm64 runtime: `apt-get {' '.join(args)}` failed: {reason[:300]}")
        return text

    def update(self) -> None:
        self._apt_get("update")

    def download(self, package: str, dest: Path) -> Path:
        self._apt_get("download", package, cwd=dest)
        debs = sorted(dest.glob(f"{package}_*.deb"))
        if not debs:
            raise Arm64RuntimeError(f"arm64 runtime: apt-get download {package} left no .deb")
        return debs[0]

    def install_download_only(self, packages: Sequence[str]) -> list[Path]:
        self._apt_get("install", "--download-only", "--no-install-recommends", *packages)
        debs = sorted((self.where / "cache" / "archives").glob("*.deb"))
        if not debs:
            raise Arm64RuntimeError(f"arm64 runtime: apt-get install --download-only {' '.join(packages)} "
                                    f"downloaded nothing")
        return debs


def _host_acquire_settings() -> list[str]:
    """The host's proxy and Check-Valid-Until settings (how this machine reaches Debian's registry), and only
    those: its other configuration (hooks that clean /var/cache/apt, ...) is not for our own apt."""
    try:
        done = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if k != "APT_CONFIG"})
    except (OSError, subprocess.SubprocessError):
        return []
    keep = re.compile(r'^Acquire::((https?|ftp|socks)::Proxy\S*|Check-Valid-Until|Check-Date|Retries|ForceIPv[46]|'
                      r'https?::Timeout|https::(CaInfo|Verify-Peer|Verify-Host)) "[^"]*";$')
    return [line for line in done.stdout.splitlines() if keep.match(line)]


def _host_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        raise Arm64UnavailableError("arm64 runtime: setting it up needs dpkg (a Debian or Ubuntu host), and "
                                    "`dpkg --print-architecture` failed") from None


def _deb_fields(deb: Path) -> tuple[str, str]:
    out = _run(["dpkg-deb", "--show", "--showformat=${Package}\\t${Version}", str(deb)], what=f"reading {deb.name}",
               timeout=120)
    name, _, version = out.strip().partition("\t")
    return name, version


def _extract_member(deb: Path, member: str, dest: Path) -> None:
    """One file out of a .deb's data, without unpacking the rest (qemu-user holds 460 MB of emulators)."""
    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for info in archive:
                if info.name.lstrip("./") == member and info.isfile():
                    source = archive.extractfile(info)
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(source, out)
                    dest.chmod(0o755)
                    break
    finally:
        process.stdout.close()
        process.kill()
        process.wait()
    if not dest.is_file():
        raise Arm64RuntimeError(f"arm64 runtime: {deb.name} has no {member}")


def _run(command: list[str], *, what: str, timeout: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as e:
        raise Arm64RuntimeError(f"arm64 runtime: {what}: {e}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise Arm64RuntimeError(f"arm64 runtime: {what} failed: {(lines or ['no output'])[-1][:300]}")
    return done.stdout


# --- the unpacked sysroot -----------------------------------------------------------------------------------------


def _relative_symlinks(sysroot: Path) -> None:
    """Absolute links inside the sysroot would point at the host's files (Debian's sitecustomize.py links to
    /etc/python3.11/sitecustomize.py, which the host may have): point them inside the sysroot instead."""
    for path in list(sysroot.rglob("*")):
        if path.is_symlink() and os.readlink(path).startswith("/"):
            target = sysroot / os.readlink(path).lstrip("/")
            path.unlink()
            path.symlink_to(os.path.relpath(target, path.parent))


def _stand_in_cpuinfo(sysroot: Path) -> None:
    """qemu 7.2 shows the host's /proc/cpuinfo to the guest (ONNX Runtime then crashes); with -L it reads
    SYSROOT/proc/cpuinfo instead (seen: ONNX Runtime then runs). qemu 10 emulates the file and never reads this
    one. Features come from the auxiliary vector (HWCAP), which qemu sets for the emulated CPU; this file only
    names a generic ARMv8 (a Cortex-A72) for the fallback."""
    entry = ("processor\t: {}\nBogoMIPS\t: 100.00\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
             "CPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 0\n\n")
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text("".join(entry.format(i) for i in range(os.cpu_count() or 1)))


def _glibc(libc6_version: str) -> tuple[int, int]:
    found = re.match(r"(?:\d+:)?(\d+)\.(\d+)", libc6_version)
    return (int(found.group(1)), int(found.group(2))) if found else GLIBC_FALLBACK
