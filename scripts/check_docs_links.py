#!/usr/bin/env python3
"""Checks that every relative link and #anchor in the project's documentation resolves.

Files checked (default): README.md, ARCHITECTURE.md and docs/src/**/*.md, relative to the
repository root (the parent of this script's folder); or the Markdown files given as arguments.

For each inline link or image `[text](target)` / `![alt](target)` and each reference definition
`[label]: target` outside fenced code blocks and code spans:
- a target with a scheme (`http:`, `https:`, `mailto:`, ...) is skipped;
- the path part (before `#`) must name an existing file or folder, relative to the linking file
  (a leading `/` means the repository root); an empty path is the linking file itself;
- the `#anchor` part must be the id of a heading of the target Markdown file, made as GitHub and
  mdBook make them: the heading's text without Markdown (code spans keep their text, links their
  text), lowercased, each space turned into `-`, and every character other than letters, digits,
  `-` and `_` removed; a repeated heading gets `-1`, `-2`, ... An explicit `{#id}` at the end of a
  heading, and `id="..."` / `name="..."` in HTML, are anchors too. In a file that is not
  Markdown only GitHub's line anchors (`#L10`, `#L10-L20`) are accepted.

It also checks that every chapter under docs/src/ is listed in docs/src/SUMMARY.md (mdBook
builds only what SUMMARY.md lists).

Prints each broken link as `file:line: target: reason` and exits 1 if there is one; otherwise
prints how many links it checked and exits 0. Python 3 standard library only.

Usage:
  scripts/check_docs_links.py            # README.md, ARCHITECTURE.md, docs/src/**/*.md
  scripts/check_docs_links.py FILE.md ...
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
DOCS_SRC = ROOT / "docs" / "src"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# `](` followed by the destination: <...>, or a run without spaces whose parentheses balance
# (one level), then an optional title.
INLINE_LINK = re.compile(
    r"\]\(\s*(<[^>\n]*>|[^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)"
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
)
REF_DEF = re.compile(r"^ {0,3}\[([^\]]+)\]:\s*(<[^>]*>|\S+)")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
HEADING_ID_ATTR = re.compile(r"\s*\{#([^\s}]+)[^}]*\}\s*$")
HTML_ID = re.compile(r"<[a-zA-Z][^>]*?\s(?:id|name)\s*=\s*[\"']([^\"']+)[\"']")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
LINE_ANCHOR = re.compile(r"^L\d+(?:C\d+)?(?:-L\d+(?:C\d+)?)?$")


def lines_outside_fences(text: str):
    """Yields (line number, line) for every line that is not inside a fenced code block."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                continue
            yield number, line
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and line.strip() == match.group(1):
            fence = None


def heading_text(raw: str) -> str:
    """The text a heading renders to: code spans keep their content, links and images their
    text, emphasis markers and HTML tags go."""
    pieces = []
    last = 0
    for match in CODE_SPAN.finditer(raw):
        pieces.append(("text", raw[last:match.start()]))
        pieces.append(("code", match.group(2).strip() if match.group(2).strip() else match.group(2)))
        last = match.end()
    pieces.append(("text", raw[last:]))
    out = []
    for kind, piece in pieces:
        if kind == "text":
            piece = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", piece)
            piece = re.sub(r"!?\[([^\]]*)\]\[[^\]]*\]", r"\1", piece)
            piece = re.sub(r"<[^>]+>", "", piece)
            piece = piece.replace("*", "").replace("~~", "")
            piece = re.sub(r"(?<![0-9A-Za-z])_+|_+(?![0-9A-Za-z])", "", piece)
        out.append(piece)
    return "".join(out)


def slug(text: str) -> str:
    """GitHub's and mdBook's heading id."""
    text = text.strip().lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return kept.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors_of(path: Path) -> frozenset[str]:
    """Every anchor a Markdown file defines."""
    text = path.read_text(encoding="utf-8")
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in lines_outside_fences(text):
        for match in HTML_ID.finditer(line):
            anchors.add(match.group(1))
        heading = ATX_HEADING.match(line)
        if not heading:
            continue
        raw = re.sub(r"[ \t]+#+[ \t]*$", "", heading.group(2) or "")
        explicit = HEADING_ID_ATTR.search(raw)
        if explicit:
            anchors.add(explicit.group(1))
            continue
        base = slug(heading_text(raw))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return frozenset(anchors)


def links_of(text: str):
    """Yields (line number, target) for every link destination outside code."""
    for number, line in lines_outside_fences(text):
        line = CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)
        definition = REF_DEF.match(line)
        if definition:
            yield number, definition.group(2)
            continue
        for match in INLINE_LINK.finditer(line):
            yield number, match.group(1)


def check_link(source: Path, target: str) -> str | None:
    """None when the target resolves, else why not."""
    target = target.strip()
    if target.startswith("<") and target.endswith(">"):
        target = target[1:-1].strip()
    if not target:
        return "empty link"
    if SCHEME.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    if not path_part:
        resolved = source
    elif path_part.startswith("/"):
        resolved = ROOT / path_part.lstrip("/")
    else:
        resolved = source.parent / path_part
    if not resolved.exists():
        return f"no such file: {rel(resolved)}"
    if not anchor:
        return None
    anchor = unquote(anchor)
    if resolved.is_dir():
        return f"anchor #{anchor} on a folder"
    if resolved.suffix.lower() not in (".md", ".markdown"):
        if LINE_ANCHOR.match(anchor):
            return None
        return f"anchor #{anchor} in a file that is not Markdown"
    if anchor not in anchors_of(resolved.resolve()):
        return f"no heading with anchor #{anchor} in {rel(resolved)}"
    return None


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def default_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "ARCHITECTURE.md"]
    files += sorted(DOCS_SRC.rglob("*.md"))
    return [f for f in files if f.exists()]


def unlisted_chapters() -> list[str]:
    """Chapters under docs/src/ that SUMMARY.md does not link."""
    summary = DOCS_SRC / "SUMMARY.md"
    if not summary.exists():
        return [f"{rel(summary)}: missing"] if DOCS_SRC.exists() else []
    listed = set()
    for _, target in links_of(summary.read_text(encoding="utf-8")):
        path_part = unquote(target.strip("<>").partition("#")[0])
        if path_part and not SCHEME.match(path_part):
            listed.add((summary.parent / path_part).resolve())
    problems = []
    for chapter in sorted(DOCS_SRC.rglob("*.md")):
        if chapter.name != "SUMMARY.md" and chapter.resolve() not in listed:
            problems.append(f"{rel(chapter)}: not listed in {rel(summary)}")
    return problems


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    files = [Path(arg).resolve() for arg in argv] if argv else default_files()
    broken: list[str] = []
    checked = 0
    for path in files:
        if not path.exists():
            broken.append(f"{path}: no such file")
            continue
        for number, target in links_of(path.read_text(encoding="utf-8")):
            checked += 1
            reason = check_link(path, target)
            if reason:
                broken.append(f"{rel(path)}:{number}: {target}: {reason}")
    if not argv:
        broken += unlisted_chapters()
    if broken:
        print("\n".join(broken))
        print(f"{len(broken)} broken of {checked} links in {len(files)} files", file=sys.stderr)
        return 1
    print(f"{checked} links in {len(files)} files: all resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
