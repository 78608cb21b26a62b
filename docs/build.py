"""Generates the documentation pages that come from elsewhere, under docs/generated/ (then `mkdocs build`).

- tutorials: each script of docs/tutorials/ is run (``--quick`` with ``--quick``), and rendered as its
  docstring, its source, its printed output and its figure;
- results: the README's Results section, with its figures;
- benchmarks: benchmarks/RESULTS.md, with its figures; the changelog.

    python docs/build.py [--quick]
"""

import argparse
import ast
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "generated"
TUTORIALS = ("exact_gradient", "discrete_vae", "policy_gradient")


def copy_figures(text: str, source_dir: pathlib.Path) -> str:
    """Copies every image a markdown text links (relative to ``source_dir``) to OUT/figures; relinks it."""
    figures = OUT / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    def relink(match: re.Match) -> str:
        path = (source_dir / match.group(2)).resolve()
        shutil.copy(path, figures / path.name)
        return f"![{match.group(1)}](figures/{path.name})"

    return re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", relink, text)


def relink_sources(text: str) -> str:
    """Links into the repository (benchmarks/RESULTS.md and the like) become plain text: they are not pages."""
    return re.sub(r"\[([^\]]+)\]\((?!https?:)([^)#]+\.(?:md|py|json))\)", r"\1 (`\2`)", text)


def tutorial(name: str, quick: bool) -> str:
    script = ROOT / "docs" / "tutorials" / f"{name}.py"
    figures = OUT / "tutorials"
    command = [sys.executable, str(script), "--out", str(figures)] + (["--quick"] if quick else [])
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    output = run.stdout.replace(str(ROOT) + "/", "")
    source = script.read_text()
    docstring = ast.get_docstring(ast.parse(source)) or ""
    title, _, body = docstring.partition("\n")
    return (f"# {title.removeprefix('Tutorial ').split(': ', 1)[-1]}\n\n{body.strip()}\n\n"
            f"```python\n{source}\n```\n\nIts output:\n\n```text\n{output.strip()}\n```\n\n"
            f"![{name}]({name}.png)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run the tutorials in their quick mode")
    args = parser.parse_args()
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "tutorials").mkdir(parents=True)
    for name in TUTORIALS:
        (OUT / "tutorials" / f"{name}.md").write_text(tutorial(name, args.quick))
        print(f"rendered tutorial {name}")
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Results")
    end = readme.index("\n## ", start + 1)
    results = "# Results" + readme[start + len("\n## Results"):end]
    (OUT / "results.md").write_text(relink_sources(copy_figures(results.replace("\n### ", "\n## "), ROOT)))
    benchmarks = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    (OUT / "benchmarks.md").write_text(relink_sources(copy_figures(benchmarks, ROOT / "benchmarks")))
    shutil.copy(ROOT / "CHANGELOG.md", OUT / "changelog.md")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
