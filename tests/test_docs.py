"""The documentation's links resolve, and the README stays a newcomer's page.

Plain text checks (no TensorFlow): every relative link in README.md, docs/*.md,
benchmarks/README.md and ARCHITECTURE.md names an existing file or folder, and a `#anchor`
into a markdown file names one of its headings, slugged the way GitHub renders them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "benchmarks" / "README.md",
               *(ROOT / "docs").glob("*.md")])
SETUP_COMMANDS = ("bash scripts/demo.sh", "bash scripts/test.sh")

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target), with an optional "title"; nested brackets in the text are
# rare enough in these docs to leave out.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed: a `# comment` in a bash block
    is not a heading and a link shown as code is not a link."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        lines.append("" if fenced else INLINE_CODE.sub("", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation (backticks, '*', ':', '.', ...) other
    than '-' and '_' removed, each space a '-'; a link in a heading keeps only its text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(prose_lines(path.read_text(encoding="utf-8")), start=1):
        found += [(number, m.group(1)) for m in LINK.finditer(line)]
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: ({target})"
        if not dest.exists():
            problems.append(f"{where} no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where} no heading '#{anchor}' in {dest.name}")
    return problems


def test_the_docs_exist():
    assert (ROOT / "docs").is_dir()
    assert len(DOCS) >= 6, [str(p) for p in DOCS]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_readme_links_to_every_docs_page():
    readme = {(ROOT / t.partition("#")[0]).resolve() for _, t in links(ROOT / "README.md")}
    unlinked = [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in readme]
    assert unlinked == [], "docs pages the README's 'where to go next' does not link"


def test_readme_is_a_newcomers_page_that_starts_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 250
    head = lines[:30]
    fence = [i for i, line in enumerate(head) if FENCE.match(line)]
    assert len(fence) >= 2, "the set-up commands are a code block near the top"
    block = head[fence[0] + 1:fence[1]]
    for command in SETUP_COMMANDS:
        assert any(line.strip().startswith(command) for line in block), command
        assert (ROOT / command.split()[1]).is_file(), command


def test_the_checker_finds_what_it_is_meant_to(tmp_path):
    """The checks themselves: a missing file, a missing heading, and what is not a link."""
    (tmp_path / "other.md").write_text("# Some `code` title: yes\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#some-code-title-yes) [dup](other.md#twice-1) [web](https://x.org/a)\n"
                    "[gone](missing.md) [bad](other.md#nope) `[code](missing.md)`\n"
                    "```\n[in a block](missing.md)\n# not a heading\n```\n[self](#nope)\n")
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 3, problems
    assert "missing.md" in problems[0] and "#nope" in problems[1] and "#nope" in problems[2]


# --- the flags the docs show are the CLI's current spellings -------------------------------------

FLAG = re.compile(r"^(--?[A-Za-z][\w-]*)")


def invocations(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, command, words after it) for each `featcache COMMAND ...` in code blocks and inline
    code, and for inline code that starts with a command's name (`sweep --dask ...`)."""
    from featcache.cli import cli

    found = []
    fenced, pending = False, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            pending += line.rstrip("\\") + " "
            if line.endswith("\\"):
                continue  # a shell line continued on the next
            spans, pending = [pending.split("#", 1)[0]], ""
        else:
            spans = [m.group(0).strip("`") for m in INLINE_CODE.finditer(line)]
        for span in spans:
            for piece in re.split(r"\||;|&&|\$\(", span):
                words = piece.split()
                if words[:1] == ["featcache"]:
                    words = words[1:]
                    if words and not words[0].startswith("-") and words[0] not in cli.commands:
                        found.append((number, None, words))  # no such command
                elif not fenced and words[:1] and words[0] in cli.commands and len(words) > 1:
                    pass
                else:
                    continue
                if words and words[0] in cli.commands:
                    found.append((number, words[0], words[1:]))
    return found


def flags_in(words: list[str]) -> list[str]:
    return [m.group(1) for w in words if (m := FLAG.match(w.lstrip("[(")))]


def visible_flags(command) -> set[str]:
    """What --help shows: hidden options (the old spellings of renamed flags) left out."""
    import click

    params = command.get_params(click.Context(command))  # fit-head's and sweep's head options too
    return {"--help", "-h"} | {o for p in params if isinstance(p, click.Option) and not p.hidden
                               for o in (*p.opts, *p.secondary_opts)}


USER_DOCS = [p for p in DOCS if p.name != "ARCHITECTURE.md" and p.parent.name != "benchmarks"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_featcache_command_in_the_docs_uses_flags_it_has(path):
    from featcache.cli import cli

    found = invocations(path)
    assert [f"{path.relative_to(ROOT)}:{n}: featcache {words[0]}" for n, name, words in found if name is None] == [], \
        "no such command"
    wrong = [f"{path.relative_to(ROOT)}:{n}: featcache {name} {flag}"
             for n, name, words in found if name for flag in flags_in(words)
             if flag not in visible_flags(cli.commands[name])]
    assert wrong == [], "flags that are not (or no longer) the command's spelling"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_flag_named_alone_belongs_to_some_command(path):
    """`--memory-limit SIZE` in running text: some command has it under that spelling."""
    from featcache.cli import cli

    known = set().union(*(visible_flags(c) for c in cli.commands.values()))
    wrong = []
    for number, line in enumerate(prose_lines_with_code(path), start=1):
        for span in (m.group(0).strip("`") for m in INLINE_CODE.finditer(line)):
            words = span.split()
            if words and FLAG.match(words[0]) and words[0].startswith("--"):
                wrong += [f"{path.relative_to(ROOT)}:{number}: {f}" for f in flags_in(words) if f not in known]
    assert wrong == []


def prose_lines_with_code(path: Path) -> list[str]:
    """The lines outside fenced blocks, inline code kept (fenced lines blanked, numbering kept)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else line)
    return lines


def test_an_old_spelling_kept_as_a_hidden_alias_is_not_a_current_flag():
    from featcache.cli import cli

    extract = visible_flags(cli.commands["extract"])
    assert "--executor" in extract and "--dask" not in extract
