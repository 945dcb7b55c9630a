#!/usr/bin/env python3
"""Generate Tally's Python protobuf/gRPC code, or lint the protos with buf.

    python protos/generate.py [--force]   generate into gen/ (skipped when
                                          gen/ is up to date, unless --force)
    python protos/generate.py lint        buf build + buf format check +
                                          buf lint (STANDARD, see buf.yaml)
    python protos/generate.py format      rewrite protos/ with `buf format`

Generated code goes to gen/ at the repository root (git-ignored):
gen/tally/<svc>/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py, an empty
__init__.py in every package directory and gen/tally/py.typed, so that
`import tally.catalog.v1.catalog_pb2` works with gen/ on sys.path.

The googleapis protos we import (google/api/annotations.proto, http.proto,
field_behavior.proto, httpbody.proto) are not copied into the repository:
gen/protodeps/google/api is a symlink to the copy googleapis-common-protos
installed into this interpreter's site-packages. google/protobuf/* comes from
grpc_tools' bundled include directory for protoc, and from buf's own
well-known types for buf.

Only the standard library, grpc_tools and the `buf` binary (buf-bin) are used.
Failures end with one `generate.py: error: ...` line and a non-zero exit
status, after the tool's own diagnostics.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTOS = REPO / "protos"
GEN = REPO / "gen"
DEPS = GEN / "protodeps"
PACKAGE_ROOT = "tally"  # the generated top-level package, gen/tally
STAMP_NAME = ".generated-from"  # inside gen/tally: swapped in with the code
# Bump when the layout of the generated tree changes, to force regeneration.
LAYOUT_VERSION = "1"


class GenerateError(Exception):
    """A failure reported as one line, without a traceback."""


# --------------------------------------------------------------------------
# dependencies


def _installed_google_api() -> Path:
    """The google/api directory installed by googleapis-common-protos."""
    try:
        import google.api
    except ImportError as exc:
        raise GenerateError(
            "googleapis-common-protos is not installed in this interpreter "
            f"({sys.executable}): pip install googleapis-common-protos"
        ) from exc
    for entry in getattr(google.api, "__path__", []):
        candidate = Path(entry)
        if (candidate / "annotations.proto").is_file() and (candidate / "http.proto").is_file():
            return candidate.resolve()
    raise GenerateError(
        "googleapis-common-protos is installed without google/api/annotations.proto; "
        "reinstall it: pip install --force-reinstall googleapis-common-protos"
    )


def _link(link: Path, target: Path) -> None:
    """Point `link` at `target`, atomically replacing whatever link is there."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.exists() and not link.is_symlink():
        raise GenerateError(f"{link} exists and is not a symlink; remove it")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)


def ensure_deps() -> Path:
    """Create gen/protodeps/google/api -> site-packages/google/api."""
    _link(DEPS / "google" / "api", _installed_google_api())
    return DEPS


def _wkt_include() -> Path:
    """grpc_tools' bundled include dir with google/protobuf/*.proto."""
    try:
        import grpc_tools
    except ImportError as exc:
        raise GenerateError(
            "grpcio-tools is not installed in this interpreter "
            f"({sys.executable}): pip install grpcio-tools"
        ) from exc
    for entry in grpc_tools.__path__:
        candidate = Path(entry) / "_proto"
        if (candidate / "google" / "protobuf" / "descriptor.proto").is_file():
            return candidate
    raise GenerateError("grpcio-tools has no bundled google/protobuf protos; reinstall it")


def _proto_files() -> list[str]:
    files = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))
    if not files:
        raise GenerateError(f"no .proto files under {PROTOS}")
    return files


# --------------------------------------------------------------------------
# generate


def _fingerprint(files: Sequence[str]) -> str:
    """Hash of everything the output depends on: protos, tools, this script."""
    import grpc_tools

    try:
        from importlib.metadata import version

        tools = version("grpcio-tools")
    except Exception:  # any metadata problem just means "unknown"
        tools = "unknown"
    digest = hashlib.sha256()
    digest.update(f"layout={LAYOUT_VERSION}\ngrpcio-tools={tools}\n".encode())
    digest.update(f"grpc_tools={list(grpc_tools.__path__)}\n".encode())
    digest.update(Path(__file__).read_bytes())
    for name in files:
        digest.update(f"\0{name}\0".encode())
        digest.update((PROTOS / name).read_bytes())
    return digest.hexdigest()


def _up_to_date(fingerprint: str) -> bool:
    stamp = GEN / PACKAGE_ROOT / STAMP_NAME
    try:
        return stamp.read_text().strip() == fingerprint
    except OSError:
        return False


def _run_protoc(out: Path, files: Sequence[str]) -> None:
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTOS}",
        f"--proto_path={DEPS}",
        f"--proto_path={_wkt_include()}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    result = subprocess.run(args, cwd=REPO, check=False)
    if result.returncode != 0:
        raise GenerateError(
            f"protoc failed (exit status {result.returncode}); see its messages above"
        )


def _add_package_markers(root: Path) -> None:
    """An empty __init__.py in every package directory, py.typed at the top."""
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    (root / "py.typed").write_text("")


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """Serialise concurrent runs (parallel make targets, test workers)."""
    GEN.mkdir(exist_ok=True)
    with open(GEN / ".generate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def generate(force: bool) -> int:
    with _exclusive():
        return _generate(force)


def _generate(force: bool) -> int:
    ensure_deps()
    files = _proto_files()
    fingerprint = _fingerprint(files)
    if not force and _up_to_date(fingerprint):
        print(f"generate.py: gen/{PACKAGE_ROOT} is up to date ({len(files)} protos)")
        return 0

    GEN.mkdir(exist_ok=True)
    work = GEN / f".tmp-{os.getpid()}"
    old = GEN / f".old-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        _run_protoc(work, files)
        fresh = work / PACKAGE_ROOT
        if not fresh.is_dir():
            raise GenerateError(f"protoc produced no {PACKAGE_ROOT}/ package")
        _add_package_markers(fresh)
        (fresh / STAMP_NAME).write_text(fingerprint + "\n")
        generated = sum(1 for p in fresh.rglob("*_pb2*.py*"))
        # Swap the new tree in; readers see the old or the new one, never a
        # half-written one.
        target = GEN / PACKAGE_ROOT
        if target.exists():
            os.replace(target, old)
        os.replace(fresh, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    print(
        f"generate.py: generated {generated} files from {len(files)} protos into gen/{PACKAGE_ROOT}"
    )
    return 0


# --------------------------------------------------------------------------
# buf


def _buf() -> str:
    beside = Path(sys.executable).parent / "buf"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("buf")
    if found:
        return found
    raise GenerateError("the buf CLI is not installed: pip install buf-bin")


def _run_buf(args: Sequence[str], failure: str) -> None:
    try:
        result = subprocess.run([_buf(), *args], cwd=REPO, check=False)
    except OSError as exc:
        raise GenerateError(f"cannot run buf: {exc}") from exc
    if result.returncode != 0:
        raise GenerateError(f"{failure} (buf exit status {result.returncode}); see above")


def lint() -> int:
    ensure_deps()
    _run_buf(["build"], "the protos do not compile")
    _run_buf(
        ["format", "--diff", "--exit-code", "protos"],
        "protos are not buf-formatted; run: python protos/generate.py format",
    )
    _run_buf(["lint"], "buf lint found problems")
    print(f"generate.py: buf lint clean ({len(_proto_files())} protos)")
    return 0


def format_protos() -> int:
    ensure_deps()
    _run_buf(["format", "--write", "protos"], "buf format failed")
    return 0


# --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="generate.py",
        description="Generate Python code from protos/ into gen/, or lint the protos.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="generate",
        choices=["generate", "lint", "format"],
        help="generate (default), lint (buf build, format check, lint) or format",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even when up to date")
    options = parser.parse_args(argv)
    try:
        if options.command == "lint":
            return lint()
        if options.command == "format":
            return format_protos()
        return generate(options.force)
    except GenerateError as exc:
        print(f"generate.py: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"generate.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
