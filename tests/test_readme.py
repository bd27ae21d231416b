"""The README and docs/ stay true and findable.

- The "Use an artifact" loading lines (two in the README, two in docs/artifact-folders.md) are run as written, on a
  tiny build standing in for `artifacts/`.
- The README stays a short front door (under 200 lines); every relative link in it and in docs/ resolves to a file
  (and heading) that exists, and every page of docs/ can be reached from the README.
- The tables that restate the code are kept in step with it: the targets (README and docs/targets.md), the pass
  rules (README), the manifest's keys (docs/manifest.md). The bad-input table is checked in test_bad_input.py.
"""

import json
import re
from pathlib import Path

import pytest
from conftest import installed_targets

from distilforge.targets import TARGETS
from distilforge.validate.tolerances import DEFAULT_TOLERANCES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FORMATS = ("onnx", "openvino", "torchscript", "tflite", "executorch")
# Where the loading lines live: (file, the section holding them)
LOADING_SECTIONS = ((README, "Use an artifact"), (DOCS / "artifact-folders.md", "Loading a folder in its runtime"))


def section(path: Path, heading: str) -> str:
    """The text of `## heading` in `path`, up to the next `## ` heading."""
    text = path.read_text(encoding="utf-8")
    assert f"\n## {heading}\n" in text, f"{path.name}: no section '## {heading}'"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def loading_blocks() -> dict[str, tuple[str, str]]:
    """format -> (where, the python block whose first line is `# <format>: ...`), over every loading section."""
    found: dict[str, tuple[str, str]] = {}
    for path, heading in LOADING_SECTIONS:
        for block in re.findall(r"```python\n(.*?)```", section(path, heading), flags=re.DOTALL):
            fmt = block.split(":", 1)[0].removeprefix("# ")
            assert fmt not in found, f"{fmt}: loading lines in {found[fmt][0]} and in {path.name}"
            found[fmt] = (path.name, block)
    return found


def test_every_format_has_its_lines():
    assert sorted(loading_blocks()) == sorted(FORMATS)
    readme_formats = {fmt for fmt, (where, _) in loading_blocks().items() if where == "README.md"}
    assert readme_formats, "the README shows no loading lines"


@pytest.mark.parametrize("fmt", FORMATS)
def test_readme_lines_load_the_folder(fmt, built, monkeypatch):
    where, code = loading_blocks()[fmt]
    folder = re.search(r'folder = "artifacts/([a-z0-9-]+)"', code).group(1)
    target = folder.replace("-", ":", 1)
    if target not in installed_targets():
        pytest.skip(f"{target}: backend not installed")
    if fmt == "openvino":
        pytest.importorskip("optimum.intel")
    out = built("seq-single").out
    monkeypatch.chdir(out.parent)
    code = code.replace('"artifacts/', f'"{out.name}/')
    scope: dict = {}
    exec(compile(code, f"{where} ({fmt})", "exec"), scope)
    if "classify" in scope:
        (result,) = scope["classify"]("the striker scored twice in the final", top_k=1)
        assert result["label"].startswith("LABEL_")
    else:
        assert tuple(scope["logits"].shape) == (1, 3)


# --- a short README whose links all lead somewhere ---------------------------------------------------------------

def test_readme_is_under_200_lines():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines; move the detail to a page in docs/ and link it"


def markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans, where links are links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def links(path: Path) -> list[str]:
    """The targets of every markdown link and image in `path` (inline form, `[text](target)`)."""
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose(path.read_text(encoding="utf-8")))


def anchors(path: Path) -> set[str]:
    """GitHub's ids for the headings of `path`: lower case, punctuation dropped, spaces to hyphens, -1 on repeats."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"),
                                                           flags=re.DOTALL | re.MULTILINE), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def resolve(page: Path, target: str) -> tuple[Path, str]:
    file, _, anchor = target.partition("#")
    return ((page.parent / file).resolve() if file else page), anchor


def test_every_relative_link_resolves():
    broken = []
    for page in markdown_pages():
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, anchor = resolve(page, target)
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not path.exists():
                broken.append(f"{where}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{where}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = {README.resolve()}, [README]
    while todo:
        page = todo.pop()
        for target in links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue
            path, _ = resolve(page, target)
            if path.suffix == ".md" and path.exists() and path not in reached:
                reached.add(path)
                todo.append(path)
    unreached = [str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if p.resolve() not in reached]
    assert not unreached, f"not linked from the README, nor from a page it links: {unreached}"


def test_the_link_checks_can_fail(tmp_path, monkeypatch):
    """The checks above find a broken file link, a broken anchor and an orphan page."""
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## A section: `x`\n\n[ok](#a-section-x) [bad](#nowhere) [gone](missing.md) "
                    "`[code](ignored.md)`\n", encoding="utf-8")
    assert links(page) == ["#a-section-x", "#nowhere", "missing.md"]
    assert anchors(page) == {"page", "a-section-x"}
    assert not resolve(page, "missing.md")[0].exists()


# --- tables kept in step with the code ---------------------------------------------------------------------------

def table_rows(text: str) -> list[list[str]]:
    """The body rows of the markdown tables in `text`, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| :]+\|$", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return [row for row in rows if row and row[0] not in ("format", "target", "class", "key")]


def test_readme_targets_table_lists_every_target():
    names = [name for row in table_rows(section(README, "Targets")) if len(row) == 5
             for name in re.findall(r"`([a-z]+:[a-z0-9-]+)`", row[1])]
    assert len(names) == len(set(names)), "a target is listed twice"
    assert sorted(names) == sorted(TARGETS)


def test_docs_targets_table_lists_every_target():
    rows = table_rows(section(DOCS / "targets.md", "Targets"))
    names = [re.fullmatch(r"`([a-z]+:[a-z0-9-]+)`", row[0]).group(1) for row in rows]
    assert names == list(TARGETS), "docs/targets.md's table must list the registry's targets, in its order"


def test_readme_pass_rules_match_the_defaults():
    rules = {row[0].split(" ")[0]: row[1] for row in table_rows(section(README, "Targets")) if len(row) == 2}
    assert sorted(rules) == sorted(DEFAULT_TOLERANCES)
    for klass, tol in DEFAULT_TOLERANCES.items():
        rule = rules[klass]
        expect = {
            "max abs diff": tol.max_abs is not None and f"max abs diff ≤ {tol.max_abs:.0e}".replace("e-0", "e-"),
            "agreement": tol.min_agreement is not None and f"{tol.min_agreement * 100:g} %",
            "cosine": tol.min_cosine is not None and f"cosine ≥ {tol.min_cosine:g}",
            "task metric": tol.max_task_drop is not None and f"within {tol.max_task_drop:.1f} point",
        }
        for word, phrase in expect.items():
            if phrase:
                assert phrase in rule, f"{klass}: the README's rule {rule!r} does not say {phrase!r}"
            else:
                assert word not in rule, f"{klass}: the README's rule {rule!r} names {word}, which has no default"


def documented_keys(cell: str) -> set[str]:
    """The backticked names of a manifest-table cell outside parentheses: `files[]` (`path`, ...) -> {'files'}."""
    depth, top = 0, []
    for ch in cell:
        depth += ch == "("
        if depth == 0:
            top.append(ch)
        depth -= ch == ")" and depth > 0
    return {name.removesuffix("[]") for name in re.findall(r"`([a-z_0-9]+(?:\[\])?)`", "".join(top))}


def test_manifest_keys_match_a_real_manifest(built):
    table = {row[0].strip("`"): row[1] for row in table_rows(section(DOCS / "manifest.md", "The manifest"))}
    manifest = json.loads((built("seq-single").out / "manifest.json").read_text())
    top = {key.removesuffix("[]") for key in table if "." not in key}
    assert top - {"part"} == set(manifest), "docs/manifest.md's top-level keys differ from a real manifest's"
    assert "part" in top  # a shard's manifest (tests/test_many.py checks its value)
    entry_keys = set().union(*(set(a) for a in manifest["artifacts"]))
    assert documented_keys(table["artifacts[]"]) == entry_keys, "artifacts[] keys differ from docs/manifest.md"
    validation_keys = set().union(*(set(a["validation"]) for a in manifest["artifacts"] if a["validation"]))
    assert documented_keys(table["artifacts[].validation"]) == validation_keys


def test_readme_ci_matrix_is_valid_yaml_whose_commands_parse():
    """The GitHub Actions example: real YAML, its shards cover 1..N once, and every distilforge line parses."""
    import shlex

    import yaml

    from distilforge.cli.parser import build_parser as _parser

    block = section(README, "Many checkpoints, many machines").split("```yaml\n", 1)[1].split("```", 1)[0]
    jobs = yaml.safe_load(block)["jobs"]
    matrix = jobs["shard"]["strategy"]["matrix"]["k"]
    assert jobs["merge"]["needs"] == "shard"
    commands = []
    for job in jobs.values():
        for step in job["steps"]:
            for part in step.get("run", "").split("&&"):
                if "distilforge" in part:
                    commands.append(part.strip())
    shards = []
    for k in matrix:
        for line in commands:
            args = _parser().parse_args(shlex.split(line.replace("${{ matrix.k }}", str(k)))[1:])
            if args.command == "build":
                shards.append(args.shard)
    assert sorted(shards) == [f"{k}/{len(matrix)}" for k in sorted(matrix)]
    assert any(shlex.split(line)[1] == "merge" for line in commands)
