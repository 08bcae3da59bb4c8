"""Docstrings and comments cite sources a reader can open, never a document the repository lacks.

References such as ``spec §5.2`` or ``eval protocol §4`` pointed to notes kept outside the repository.
Citations name the paper (``[Li2024] Sec. III-B``, defined in ``diffeic/lfgcm/model.py``), a file of
the authors' implementation (``official ``model/lfgcm.py````) or the cited work.  This project's own
issue numbers do not belong in the library's docstrings and comments either (the history is in git);
``owner/repo issue #N`` citations of other repositories are fine.
"""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path
from typing import Iterable, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["diffeic", "tests", "scripts", "benchmarks", "docs", "README.md", "train.py", "eval.py", "setup.cfg"]
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".cfg", ".toml", ".txt", ".rst", ".csv"}

ABSENT_DOCUMENT = re.compile(
    r"\b[Ss]pec(?:ification)? §|\b[Pp]rotocol §|diffeic_spec\.md|eval_protocol\.md|official_checkpoint_layout\.md"
    r"|official_state_dict_keys\.txt|shared/reference|/work/shared")
ISSUE_NUMBER = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
OTHER_REPOSITORY = re.compile(r"[\w.-]+/[\w.-]+\s+$")        # "huai-chang/DiffEIC issue #4" cites another repo


def absent_document_refs(text: str) -> List[Tuple[int, str]]:
    """(line, text) of every reference to a document that is not in the repository."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if ABSENT_DOCUMENT.search(line)]


def _python_prose(source: str) -> Iterator[Tuple[int, str]]:
    """(line, text) of every comment and string literal (docstrings, messages) of a Python source."""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING) or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            yield tok.start[0], tok.string


def _yaml_comments(source: str) -> Iterator[Tuple[int, str]]:
    for i, line in enumerate(source.splitlines(), 1):
        if "#" in line:
            yield i, line[line.index("#"):]


def issue_numbers(source: str, suffix: str) -> List[Tuple[int, str]]:
    """(line, mention) of this project's issue numbers in the comments and strings of a .py / .yaml file."""
    prose = _python_prose(source) if suffix == ".py" else _yaml_comments(source)
    found = []
    for line, text in prose:
        for m in ISSUE_NUMBER.finditer(text):
            if not OTHER_REPOSITORY.search(text[:m.start()]):
                found.append((line + text[:m.start()].count("\n"), m.group()))
    return found


def _files(paths: Iterable[Path], suffixes) -> Iterator[Path]:
    for path in paths:
        candidates = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for f in candidates:
            if f.is_file() and f.suffix in suffixes and "__pycache__" not in f.parts and f != Path(__file__).resolve():
                yield f


def scan(root: Path) -> Tuple[List[str], List[str]]:
    """Absent-document references anywhere in the tree; issue numbers in the library (``diffeic/``)."""
    absent = [f"{f.relative_to(root)}:{i}: {line}" for f in _files([root / n for n in SCANNED], TEXT_SUFFIXES)
              for i, line in absent_document_refs(f.read_text(encoding="utf-8"))]
    issues = [f"{f.relative_to(root)}:{i}: {m}" for f in _files([root / "diffeic"], {".py", ".yaml"})
              for i, m in issue_numbers(f.read_text(encoding="utf-8"), f.suffix)]
    return absent, issues


def test_no_reference_points_to_a_document_the_repository_lacks():
    absent, _ = scan(ROOT)
    assert not absent, "cite the paper ([Li2024] Sec. …) or the official file instead:\n" + "\n".join(absent)


def test_library_docstrings_and_comments_carry_no_issue_numbers():
    _, issues = scan(ROOT)
    assert not issues, "drop this project's issue numbers (keep the sentence):\n" + "\n".join(issues)


PLANTED = '''"""A module (spec §5.2).

Issue 14.4 made this exact; see huai-chang/DiffEIC issue #21 for the schedule.
"""
issue_14 = 3                               # identifiers are not prose
# the protocol (eval protocol §4.6) says so (issue #19)


def f():
    raise ValueError(f"bad {issue_14} (issues #6/#14)")
'''


def test_the_checks_catch_planted_references(tmp_path):
    assert [i for i, _ in absent_document_refs(PLANTED)] == [1, 6]
    assert [i for i, _ in absent_document_refs("# see ``eval_protocol.md`` §7\n# [Li2024] Sec. IV-A\n")] == [1]
    assert issue_numbers(PLANTED, ".py") == [(3, "Issue 14"), (6, "issue #19"), (10, "issues #6")]
    assert issue_numbers("a: 1   # stage 2 (issue #19)\nb: 2   # huai-chang/DiffEIC issues #6\n", ".yaml") == \
        [(1, "issue #19")]
    # the tree walk finds a planted module, and a planted README line
    (tmp_path / "diffeic" / "lfgcm").mkdir(parents=True)
    (tmp_path / "diffeic" / "lfgcm" / "planted.py").write_text(PLANTED, encoding="utf-8")
    (tmp_path / "README.md").write_text("Pipeline (spec §1).\n", encoding="utf-8")
    absent, issues = scan(tmp_path)
    assert absent == ["diffeic/lfgcm/planted.py:1: \"\"\"A module (spec §5.2).",
                      "diffeic/lfgcm/planted.py:6: # the protocol (eval protocol §4.6) says so (issue #19)",
                      "README.md:1: Pipeline (spec §1)."]
    assert len(issues) == 3 and all(i.startswith("diffeic/lfgcm/planted.py:") for i in issues)


@pytest.mark.parametrize("text", ["[Li2024] Sec. III-B, Eq. (13)", "official ``model/lfgcm.py``",
                                  "HiFiC (Mentzer et al. 2020, §3.2)", "RDEIC [Li2025], arXiv:2410.02640"])
def test_real_citations_pass(text):
    assert absent_document_refs(text) == [] and issue_numbers(f"# {text}\n", ".py") == []
