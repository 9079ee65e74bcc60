"""The manuals: docs/ builds with MkDocs in strict mode, and README.md's links lead somewhere.

The strict build fails on a broken link or anchor between pages and on a page missing from the
nav (mkdocs.yml's `validation`); the README is not part of the site, so its links are checked
here, anchors included.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: The manuals issue 10 moves out of the README: each has its own page, linked from the README.
MANUALS = {
    "API": "docs/api.md",
    "report": "docs/robustness-report.md",
    "queue": "docs/queue.md",
    "optimizer library": "docs/optimizer.md",
    "workloads": "docs/workloads.md",
}

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code, where links are links."""
    kept, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(INLINE_CODE.sub("", line))
    return "\n".join(kept)


def relative_links(markdown: str) -> list[str]:
    """Every link and image target that is neither a URL nor a bare anchor."""
    targets = LINK.findall(prose(markdown))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc (MkDocs) and GitHub make it, for plain text."""
    text = re.sub(r"[`*_]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings."""
    text = page.read_text(encoding="utf-8")
    return {slug(m) for m in re.findall(r"^#{1,6} +(.+?) *#*$", prose(text), flags=re.M)}


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of one config into `site`, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_mkdocs_strict_build_succeeds(tmp_path: Path) -> None:
    result = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "figures" / "quick_lr_curves.png").is_file()


@pytest.mark.parametrize(
    "breakage",
    ["[gone](no-such-page.md)", "[gone](api.md#no-such-anchor)", "an orphan page"],
)
def test_mkdocs_strict_build_fails_on_broken_docs(tmp_path: Path, breakage: str) -> None:
    """The build above cannot pass by accident: a broken link, anchor or orphan page fails it."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    if breakage == "an orphan page":
        (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n", encoding="utf-8")
    else:
        with (tmp_path / "docs" / "index.md").open("a", encoding="utf-8") as page:
            page.write(f"\n{breakage}\n")
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0, result.stdout + result.stderr


def test_every_relative_link_in_readme_resolves() -> None:
    links = relative_links(README.read_text(encoding="utf-8"))
    assert len(links) >= 10, links
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (ROOT / path).resolve()
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading with that anchor")
    assert not broken, broken


def test_link_helpers_read_prose_links_and_anchors() -> None:
    """The helpers see links in prose only, and a missing file or anchor is reported."""
    text = "[a](docs/api.md) `[b](nope.md)` [c](https://x.org) [d](#top)\n```\n[e](nope.md)\n```\n"
    assert relative_links(text) == ["docs/api.md"]
    assert slug("Docs: API `tokens` — here") == "docs-api-tokens-here"
    assert "no-such-anchor" not in anchors(ROOT / "docs" / "api.md")


@pytest.mark.parametrize(("manual", "page"), MANUALS.items())
def test_each_manual_has_a_page_linked_from_readme_and_the_nav(manual: str, page: str) -> None:
    path = ROOT / page
    assert path.is_file(), f"the {manual} manual has no page {page}"
    assert path.read_text(encoding="utf-8").startswith("# "), f"{page} has no title"
    readme_targets = {link.partition("#")[0] for link in relative_links(README.read_text("utf-8"))}
    assert page in readme_targets, f"README.md does not link the {manual} manual ({page})"
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(rf":\s+{re.escape(Path(page).name)}\s*$", nav, flags=re.M), page


def test_readme_keeps_the_two_commands() -> None:
    """CI and newcomers run the commands the README shows."""
    text = README.read_text(encoding="utf-8")
    assert "```bash\nbash scripts/quickstart.sh\n```" in text
    assert "```bash\nbash scripts/test.sh\n```" in text
