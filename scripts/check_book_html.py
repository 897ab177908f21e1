#!/usr/bin/env python3
"""Checks every internal link of the built docs book (mdBook's HTML, scripts/docs.sh build).

For each `href` in BOOK_DIR/**/*.html (default var/book):
- one with a scheme (`http:`, `https:`, `mailto:`, ...) or starting with `//` is skipped;
- the path (before `#`) is resolved against the page's `<base href>` if it has one, else its
  folder; a leading `/` means BOOK_DIR. A folder means its index.html. It must name a file;
- the `#anchor` must be an `id` (or `name`) in that file.

A link that climbs out of BOOK_DIR (`../../ARCHITECTURE.html`: a chapter linking a file of the
repository) cannot resolve in the book; it is counted, not failed, since
scripts/check_docs_links.py checks it in the Markdown, where it works (on GitHub, in a checkout).
`-v` lists them.

Prints each broken link as `page: href: reason` (once per page) and exits 1 if there is one;
otherwise prints how many links it checked (each page's distinct ones) and exits 0. Python 3
standard library only.

Usage:
  scripts/check_book_html.py [-v] [BOOK_DIR]
"""

from __future__ import annotations

import posixpath
import re
import sys
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


class Page(HTMLParser):
    """The ids, the `<base href>` and the hrefs of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.base: str | None = None
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        for name in ("id", "name"):
            if name in values and tag != "meta":
                self.ids.add(values[name])
        if tag == "base" and "href" in values:
            self.base = values["href"]
        elif "href" in values:
            self.hrefs.append(values["href"])


@lru_cache(maxsize=None)
def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def resolve(book: Path, page_path: Path, base: str | None, href_path: str) -> str:
    """The link's path relative to the book's root (posix, may start with `..`)."""
    here = posixpath.dirname(page_path.relative_to(book).as_posix())
    if base is not None:
        here = base.strip("/") if base.startswith("/") else posixpath.join(here, base.rstrip("/"))
    if href_path.startswith("/"):
        return posixpath.normpath(href_path.lstrip("/") or ".")
    return posixpath.normpath(posixpath.join(here, href_path))


def check(book: Path, page_path: Path, href: str) -> tuple[str, str | None]:
    """("ok" | "outside" | "broken", why)."""
    path_part, _, anchor = href.partition("#")
    path_part = unquote(path_part.split("?", 1)[0])
    page = parse(page_path)
    if path_part:
        relative = resolve(book, page_path, page.base, path_part)
        if relative == ".." or relative.startswith("../"):
            return "outside", None
        target = book / relative
        if target.is_dir():
            target = target / "index.html"
    else:
        target = page_path
    if not target.is_file():
        return "broken", f"no such file: {target.relative_to(book)}"
    if not anchor:
        return "ok", None
    if target.suffix != ".html":
        return "broken", f"anchor #{anchor} in a file that is not HTML"
    if unquote(anchor) not in parse(target).ids:
        return "broken", f"no id {anchor!r} in {target.relative_to(book)}"
    return "ok", None


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    verbose = "-v" in argv
    args = [arg for arg in argv if arg != "-v"]
    book = Path(args[0]).resolve() if args else ROOT / "var" / "book"
    pages = sorted(book.rglob("*.html"))
    if not pages:
        print(f"{book}: no HTML pages (build it: scripts/docs.sh build)", file=sys.stderr)
        return 2
    broken, outside, checked = [], [], 0
    for page_path in pages:
        for href in dict.fromkeys(parse(page_path).hrefs):  # each link of a page once, in order
            if not href or SCHEME.match(href) or href.startswith("//"):
                continue
            checked += 1
            verdict, why = check(book, page_path, href)
            name = page_path.relative_to(book)
            if verdict == "broken":
                broken.append(f"{name}: {href}: {why}")
            elif verdict == "outside":
                outside.append(f"{name}: {href}")
    if verbose:
        print("\n".join(f"leaves the book: {line}" for line in outside))
    if broken:
        print("\n".join(broken))
        print(f"{len(broken)} broken of {checked} links in {len(pages)} pages", file=sys.stderr)
        return 1
    print(f"{checked} links in {len(pages)} pages: all resolve "
          f"({len(outside)} leave the book for the repository; checked in the Markdown)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
