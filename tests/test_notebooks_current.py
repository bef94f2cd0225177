"""Every notebook in notebooks/ follows the book's conventions and has a current smoke reference copy."""

import json

import nbformat
import papermill
import pytest
import yaml

from hypernets import book, runner
from hypernets.book import PROJECT_ROOT

SOURCES = runner.notebook_sources()
REGENERATE = "regenerate it with `hypernets-run --profile smoke {name}` and commit tests/notebooks/{name}.ipynb"


def test_the_book_has_notebooks():
    assert SOURCES, f"no notebooks in {runner.NOTEBOOKS_DIR}"


@pytest.fixture(params=SOURCES, ids=[source.stem for source in SOURCES])
def source(request):
    return request.param


def test_saved_without_outputs(source):
    nb = nbformat.read(str(source), as_version=4)
    with_outputs = [index for index, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.outputs]
    counted = [index for index, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.execution_count]
    assert not with_outputs and not counted, (
        f"{source.name}: cells {with_outputs or counted} have outputs or execution counts; clear them before saving"
    )


def test_every_cell_has_a_unique_id(source):
    # nbformat 5.1 notebooks need cell ids (nbformat warns now and will refuse later); read raw,
    # since nbformat.read would add missing ids silently.
    cells = json.loads(source.read_text())["cells"]
    without = [index for index, cell in enumerate(cells) if not cell.get("id")]
    ids = [cell.get("id") for cell in cells]
    assert not without, f"{source.name}: cells {without} have no id"
    assert len(set(ids)) == len(ids), f"{source.name}: cell ids repeat"


def test_one_parameters_cell_declaring_profile_device_seed(source):
    nb = nbformat.read(str(source), as_version=4)
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{source.name} has {len(tagged)} cells tagged 'parameters'; expected exactly one"
    declared = papermill.inspect_notebook(str(source))
    missing = {"profile", "device", "seed"} - set(declared)
    assert not missing, f"{source.name}: the parameters cell does not declare {sorted(missing)}"


def test_has_a_summary_cell_checked_by_nbval(source):
    nb = nbformat.read(str(source), as_version=4)
    assert any("nbval-check-output" in cell.metadata.get("tags", []) for cell in nb.cells), (
        f"{source.name} has no cell tagged 'nbval-check-output' (the cell that calls cfg.summary)"
    )


def test_profile_file_names_the_parameters_of_the_cell(source):
    declared = set(papermill.inspect_notebook(str(source))) - {"profile"}
    for profile, values in book.load_profiles(source.stem).items():
        assert set(values) == declared, (
            f"hypernets/profiles/{source.stem}.yaml profile {profile!r} names {sorted(values)}, "
            f"the parameters cell of {source.name} declares {sorted(declared)}"
        )


def test_reference_copy_is_made_from_the_current_source(source):
    reference = runner.REFERENCE_DIR / source.name
    hint = REGENERATE.format(name=source.stem)
    assert reference.is_file(), f"{source.name} has no smoke reference copy {reference}; {hint}"
    meta = nbformat.read(str(reference), as_version=4).metadata.get("hypernets", {})
    assert meta.get("profile") == "smoke", f"{reference} is not a smoke run; {hint}"
    assert meta.get("source_sha256") == runner.source_sha256(source), (
        f"{reference} was made from an older version of {source.name}; {hint}"
    )
    assert meta.get("numerics") == "portable", (
        f"{reference} was not made in the portable numerics that the notebook tests re-execute it in; {hint}"
    )


def _toc_files() -> list[str]:
    toc = yaml.safe_load((PROJECT_ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files


def test_every_notebook_is_a_chapter_of_the_book_once():
    notebook_entries = [file for file in _toc_files() if not (PROJECT_ROOT / f"{file}.md").exists()]
    expected = sorted(f"book/{source.stem}" for source in SOURCES)
    assert sorted(notebook_entries) == expected, (
        "_toc.yml must list every notebook once, as book/<name> (the executed copy), and no other notebook"
    )


def test_book_copy_is_current_and_a_preview_says_so(source):
    copy = runner.BOOK_DIR / source.name
    hint = (f"run `hypernets-run --profile full {source.stem}` (or, until a full run exists, "
            f"`hypernets-run --profile smoke --output-dir book {source.stem}`) and commit {copy}")
    assert copy.is_file(), f"{source.name} has no executed copy in the book; {hint}"
    executed = nbformat.read(str(copy), as_version=4)
    meta = executed.metadata.get("hypernets", {})
    assert meta.get("source_sha256") == runner.source_sha256(source), (
        f"{copy} was made from an older version of {source.name}; {hint}"
    )
    info = next(cell for cell in executed.cells if runner.RUN_INFO_TAG in cell.metadata.get("tags", []))
    if meta["profile"] in runner.RESULT_PROFILES:
        results = json.loads((runner.BOOK_DIR / "results" / f"{source.stem}.json").read_text())
        assert (results["notebook"], results["profile"], results["commit"]) == (
            source.stem, meta["profile"], meta["commit"])
        assert "Preview" not in info.source
    else:
        assert "Preview, not a result" in info.source, f"{copy} is a {meta['profile']} run without the preview warning"


def test_the_reproduce_page_names_the_profile_each_book_page_shows(source):
    profile = nbformat.read(str(runner.BOOK_DIR / source.name), as_version=4).metadata["hypernets"]["profile"]
    rows = [line for line in (runner.BOOK_DIR / "reproduce.md").read_text().splitlines()
            if line.startswith(f"| {{doc}}`{source.stem}` |")]
    assert len(rows) == 1, f"book/reproduce.md needs one row for {source.stem} in 'What each page shows today'"
    page_cell = rows[0].split("|")[2]
    assert f"`{profile}`" in page_cell, (
        f"book/reproduce.md says {source.stem}'s page is {page_cell.strip()!r}; its book copy is a {profile} run"
    )
