"""Every notebook in notebooks/ follows the book's conventions and has a current smoke reference copy."""

import nbformat
import papermill
import pytest

from hypernets import book, runner

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
