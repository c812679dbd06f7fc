"""`tally validate`: every job and table of a jobs package is loaded and each error is reported with its job's
name; CI runs it before the tests, so a typo in a job fails the build there."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from chalicelib.jobs import read_definitions
from chalicelib.local.cli import EXIT_FAILED, EXIT_OK, main

TABLES = '''
from chalicelib.tables import CsvFormat, Table
TABLES = {"visits": Table(prefix="visits/", format=CsvFormat(columns={"ip": "string", "n": "int64"}))}
'''
MODULES = {
    "tables": TABLES,
    "good": 'JOB = {"name": "good", "sql": "SELECT ip, count(*) AS c FROM visits GROUP BY ip"}',
    "typo": 'JOB = {"name": "typo", "sql": "SELECT ip, sum(nn) AS total\\nFROM visits GROUP BY ip"}',
    "python_typo": 'JOB = {"name": "python-typo", "prefix": "v/", "format": {"kind": "csv", "columns": {"n": "int64"}},'
                   ' "keys": {"k": "m"}, "aggregates": {"c": "count()"}}',
    "no_job": "X = 1",
    "broken": "import no_such_module_anywhere",
}


def package(tmp_path: Path, monkeypatch, name: str, modules: dict[str, str]) -> str:
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for module, text in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_the_shipped_jobs_and_tables_are_valid(capsys):
    assert main(["validate"]) == EXIT_OK
    assert "reducers: 11 jobs and 3 tables, all valid" in capsys.readouterr().out


def test_each_error_is_reported_with_its_job_and_the_exit_code_is_1(tmp_path, monkeypatch, capsys):
    name = package(tmp_path, monkeypatch, "jobs_with_errors", MODULES)
    assert main(["validate", "--package", name]) == EXIT_FAILED
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, out
    assert "error: jobs_with_errors.typo: job 'typo': unknown column 'nn' (columns: ip, n) at line 1, column 16" in out
    assert "error: jobs_with_errors.python_typo: job 'python-typo':" in out and "unknown column 'm'" in out
    assert "error: jobs_with_errors.no_job: defines no JOB" in out
    assert "error: jobs_with_errors.broken: ModuleNotFoundError: No module named 'no_such_module_anywhere'" in out


def test_the_valid_jobs_of_a_package_still_load_beside_the_broken_ones(tmp_path, monkeypatch):
    definitions = read_definitions(package(tmp_path, monkeypatch, "jobs_partly_valid", MODULES))
    assert [job.name for job in definitions.jobs] == ["good"] and list(definitions.tables) == ["visits"]


def test_a_broken_tables_module_is_one_error_and_the_sql_jobs_on_it_say_so(tmp_path, monkeypatch):
    modules = {"tables": 'TABLES = {"visits": {"prefix": "visits/"}}', "good": MODULES["good"]}
    errors = read_definitions(package(tmp_path, monkeypatch, "jobs_bad_tables", modules)).errors
    assert errors[0].startswith("jobs_bad_tables.tables: table 'visits':") and "format" in errors[0]
    assert errors[1].startswith("jobs_bad_tables.good: job 'good': unknown table 'visits' (tables: none)")


def test_ci_validates_the_jobs_before_running_the_tests():
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", Path("Makefile").read_text(), re.M)[1].splitlines()
    validate = next(i for i, line in enumerate(recipe) if "tally validate" in line)
    tests = next(i for i, line in enumerate(recipe) if "pytest" in line)
    assert validate < tests
    assert "make test" in Path(".ci/run").read_text()


@pytest.mark.parametrize("definition, message", [
    ('{"name": "x", "sql": "SELECT ip FROM visits", "shard": 2}', "unexpected keyword argument 'shard'"),
    ('{"name": "Bad Name", "sql": "SELECT ip FROM visits"}', "job 'Bad Name':"),
])
def test_a_sql_definition_with_a_wrong_field_is_an_error_too(tmp_path, monkeypatch, definition, message):
    name = package(tmp_path, monkeypatch, f"jobs_field_{abs(hash(definition))}",
                   {"tables": TABLES, "one": f"JOB = {definition}"})
    [error] = read_definitions(name).errors
    assert message in error
