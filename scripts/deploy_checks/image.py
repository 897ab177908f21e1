"""The image: the tags the manifests use, the Dockerfile against what CI builds.

Part of scripts/k8s_checks.py (see its docstring).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from deploy_checks.common import Report, SERVICES, TOOLS, load_yaml, pod_spec


def check_images(root: Path, variants: dict[str, list[dict]], rep: Report) -> None:
    problems = []
    m = re.search(r'VERSION="\$\{KAFKA_VERSION:-([^}]+)\}"', (root / "scripts/kafka.sh").read_text())
    kafka_version = m.group(1) if m else None
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    version = cargo["workspace"]["package"]["version"]
    base = load_yaml(root / "k8s/base/kustomization.yaml")
    tags = {i["name"]: i.get("newTag") for i in base.get("images") or []}
    if tags.get("metastream") != version:
        problems.append(f"k8s/base tags the metastream image {tags.get('metastream')}, the workspace version is {version}")
    images = set()
    for objs in variants.values():
        for o in objs:
            spec = pod_spec(o)
            for c in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
                images.add(c["image"])
    compose = (root / "deploy/docker-compose.yml").read_text()
    images |= set(re.findall(r"^\s*image:\s*(\S+)", compose, re.M))
    for img in sorted(images):
        if img.startswith("apache/kafka:") and kafka_version and img != f"apache/kafka:{kafka_version}":
            problems.append(f"{img}: scripts/kafka.sh runs Kafka {kafka_version}")
    rep.result("images: Kafka release same as scripts/kafka.sh, metastream tag = workspace version", problems,
               f"Kafka {kafka_version}, metastream {version}")


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rules, enough for an allow-list: the last matching pattern wins; a pattern matching a
    parent directory matches what is below it."""
    allowed = True
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if p.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.split("/")[-1], p[3:]) or fnmatch.fnmatch(c, p[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, p) for c in candidates)
        if hit:
            allowed = neg
    return allowed


def workspace_bins(root: Path) -> set[str]:
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    bins = set()
    for member in cargo["workspace"]["members"]:
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        declared = [b["name"] for b in manifest.get("bin") or []]
        bins |= set(declared)
        if not declared and (root / member / "src/main.rs").is_file() and manifest.get("package", {}).get("autobins", True):
            bins.add(manifest["package"]["name"])
    return bins


def check_dockerfile(root: Path, rep: Report) -> None:
    problems, notes = [], []
    text = (root / "deploy/Dockerfile").read_text()
    # Toolchain: the same Rust as CI (the machine's rustc; no rust-toolchain file pins it otherwise).
    m = re.search(r"^ARG RUST_VERSION=(\S+)", text, re.M)
    want = m.group(1) if m else None
    # The build stage's base: `FROM rust:...`, or `FROM ${TOOLCHAIN_IMAGE}` whose default is the rust
    # image (scripts/image.sh passes a locally made base where no registry is reachable).
    toolchain_base = re.search(r"^ARG TOOLCHAIN_IMAGE=(\S+)", text, re.M)
    if toolchain_base and re.search(r"^FROM \$\{TOOLCHAIN_IMAGE\} AS toolchain$", text, re.M):
        text = text.replace("${TOOLCHAIN_IMAGE}", toolchain_base.group(1))
    if want is None or "FROM rust:${RUST_VERSION}-" not in text:
        problems.append("no `ARG RUST_VERSION` used by `FROM rust:${RUST_VERSION}-...`")
    for tc in ("rust-toolchain.toml", "rust-toolchain"):
        f = root / tc
        if f.is_file():
            ch = re.search(r'channel\s*=\s*"([^"]+)"', f.read_text())
            pinned = ch.group(1) if ch else f.read_text().strip()
            if want and not pinned.startswith(want):
                problems.append(f"{tc} pins {pinned}, the Dockerfile uses Rust {want}")
    rustc = shutil.which("rustc")
    if rustc and want:
        out = subprocess.run([rustc, "--version"], capture_output=True, text=True).stdout
        v = re.search(r"rustc (\d+\.\d+)", out)
        if v and v.group(1) != ".".join(want.split(".")[:2]):
            problems.append(f"Dockerfile builds with Rust {want}, CI's toolchain is {v.group(1)} ({out.strip()})")
        notes.append(f"Rust {want} = CI's {v.group(1) if v else '?'}")
    else:
        notes.append(f"Rust {want} (no rustc here to compare)")
    if "FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE}" in text and "ARG DEBIAN_RELEASE=bookworm" not in text:
        problems.append("the build stage is not Debian bookworm (CI's and the runtime's release)")
    # The cargo invocation: CI's (the Makefile's build flags) plus --release.
    builds = re.findall(r"^RUN cargo build (.*)$", text, re.M)
    if len(builds) != 1:
        problems.append(f"expected one `RUN cargo build ...`, found {len(builds)}")
    else:
        flags = set(builds[0].split())
        if flags != {"--release", "--workspace", "--bins"}:
            problems.append(f"`cargo build {builds[0]}` is not `cargo build --release --workspace --bins`")
        mk = root / "Makefile"
        if mk.is_file():
            mk_text = mk.read_text()
            rel = re.findall(r"^\t\$\(CARGO\) build (.*--release.*)$", mk_text, re.M)
            dbg = re.findall(r"^\t\$\(CARGO\) build (.*)$", mk_text, re.M)
            if rel and set(rel[0].split()) != flags:
                problems.append(f"the Makefile builds releases with `{rel[0]}`, the Dockerfile with `{builds[0]}`")
            elif dbg and set(dbg[0].split()) | {"--release"} != flags:
                problems.append(f"the Makefile builds with `{dbg[0]}`, the Dockerfile with `{builds[0]}` (beyond --release)")
        notes.append(f"cargo build {builds[0]}")
    for pkg in ("gcc", "g++", "make", "pkg-config", "libssl-dev", "zlib1g-dev"):
        if not re.search(rf"apt-get install[^\n]*(\\\n[^\n]*)*\s{re.escape(pkg)}(\s|$)", text):
            problems.append(f"the build stage does not install {pkg}")
    m = re.search(r"for bin in ([^;]+);", text)
    copied = set(m.group(1).split()) if m else set()
    bins = workspace_bins(root)
    if copied != bins:
        problems.append(f"the image gets {sorted(copied)}, the workspace builds {sorted(bins)}")
    if set(SERVICES) | set(TOOLS) != bins:
        problems.append(f"scripts/k8s_checks.py knows services {sorted(SERVICES)} and tools {sorted(TOOLS)}, "
                        f"the workspace builds {sorted(bins)}: a new service needs a Deployment, a tool an entry in TOOLS")
    # Runtime stage: non-root, no shell needed.
    final = text[text.rfind("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    base_image = re.search(r"^FROM\s+(\S+)", final.strip(), re.M).group(1)
    runtime_base = re.search(r"^ARG RUNTIME_IMAGE=(\S+)", text, re.M)
    if base_image == "${RUNTIME_IMAGE}" and runtime_base:
        base_image = runtime_base.group(1)
    if not (users and users[-1].split(":")[0] not in ("root", "0")) and not base_image.endswith(":nonroot"):
        problems.append("the runtime stage runs as root")
    for instr in ("ENTRYPOINT", "CMD"):
        for line in re.findall(rf"^{instr}\s+(.*)$", final, re.M):
            if not line.strip().startswith("["):
                problems.append(f"runtime {instr} in shell form needs a shell: {line}")
    if "COPY config/ /app/config/" not in final or "METASTREAM_CONFIG_DIR=/app/config" not in final:
        problems.append("the runtime stage does not put the configuration at /app/config (METASTREAM_CONFIG_DIR)")
    # .dockerignore lets the workspace in.
    ign = [l.strip() for l in (root / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    for path in ["Cargo.toml", "Cargo.lock", "config/default.yaml", "console/index.html"] + [f"{m}/Cargo.toml" for m in cargo["workspace"]["members"]] \
            + [str(p.relative_to(root)) for m in cargo["workspace"]["members"] for p in (root / m).rglob("*.rs")][:200]:
        if not dockerignore_allows(ign, path):
            problems.append(f".dockerignore keeps {path} out of the build context")
    for path in ["target/release/gateway", "var/venv/bin/python", ".git/HEAD"]:
        if dockerignore_allows(ign, path):
            problems.append(f".dockerignore lets {path} into the build context")
    notes.append(f"binaries {', '.join(sorted(bins))}")
    for tool, what in TOOLS.items():
        notes.append(f"{tool}: {what.split(':')[0]}")
    rep.result("Dockerfile: CI's toolchain and cargo invocation, every binary, non-root runtime without a shell", problems, "; ".join(notes))
