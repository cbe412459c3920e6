"""Differential tests: wlmd must answer like DCMTK's wlmscpfs 3.6.7 on the same directory.

Both servers serve the corpus of ``tests.support.corpus`` on two loopback ports; every query is
sent to both with DCMTK ``findscu -X`` and the answers are compared as multisets of (status,
dataset), plus final status, status detail, findscu's messages and exit status (see
``tests.support.differential``). Each option set starts each server once.
``WLMD_DIFF_CANDIDATE=wlmscpfs`` runs a second wlmscpfs in place of wlmd, to check the harness
and corpus themselves.

Documented departures (docs/compat.md §12) are excluded from the multiset runs and
asserted on their own below: InstitutionalDepartmentName, ``-nse`` with a zero-item SPS and
``--no-fail`` with three SPS items.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import corpus, differential, processes
from tests.support.corpus import QUERIES, Query

pytestmark = pytest.mark.interop


@dataclass(frozen=True)
class Corpus:
    """The database root and every query converted to DICOM."""

    db: Path
    files: dict[str, Path]
    work: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Build the corpus once for the module (needs dump2dcm)."""
    processes.require_dcmtk()
    root = tmp_path_factory.mktemp("interop")
    db = corpus.build_database(root / "db")
    return Corpus(db, corpus.write_queries(root / "queries"), root)


def by_ae(queries: list[Query], files: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """Group query files by called AE, keeping corpus order."""
    groups: dict[str, dict[str, Path]] = {}
    for query in queries:
        groups.setdefault(query.ae, {})[query.name] = files[query.name]
    return groups


def run_side(kind: str, built: Corpus, label: str, server: tuple[str, ...],
             findscu: tuple[str, ...], groups: dict[str, dict[str, Path]]
             ) -> dict[str, differential.Session]:
    """Start one server with ``server`` options and send every group; one session per AE."""
    out = built.work / label / kind
    out.mkdir(parents=True)
    proc, port = differential.start_server(kind, built.db, server, out / "server.log")
    try:
        return {ae: differential.run_findscu(port, ae, files, out / ae, findscu)
                for ae, files in groups.items()}
    finally:
        processes.stop_process(proc)


def run_both(built: Corpus, label: str, queries: list[Query], server: tuple[str, ...] = (),
             findscu: tuple[str, ...] = (), candidate_server: tuple[str, ...] | None = None
             ) -> tuple[dict[str, differential.Session], dict[str, differential.Session]]:
    """Run the reference and the candidate side by side (two threads, two processes)."""
    groups = by_ae(queries, built.files)
    with ThreadPoolExecutor(2) as pool:
        reference = pool.submit(run_side, "wlmscpfs", built, label, server, findscu, groups)
        candidate = pool.submit(run_side, "wlmd", built, label,
                                server if candidate_server is None else candidate_server,
                                findscu, groups)
        return reference.result(), candidate.result()


@dataclass(frozen=True)
class OptionSet:
    """Server options, findscu options and which corpus queries this run sends."""

    name: str
    server: tuple[str, ...]
    findscu: tuple[str, ...]
    select: Callable[[Query], bool]


def tagged(*tags: str) -> Callable[[Query], bool]:
    """Select queries carrying any of ``tags``."""
    return lambda query: bool(query.tags & set(tags))


OPTION_SETS = [
    OptionSet("default", (), (), lambda query: True),
    OptionSet("cs1", ("-cs1",), (), tagged("charset")),
    OptionSet("csk", ("-csk",), (), tagged("charset")),
    OptionSet("nse", ("-nse",), (), lambda q: "sequence" in q.tags and "zero_sps" not in q.tags),
    OptionSet("dfr", ("-dfr",), (), tagged("dfr")),
    OptionSet("no_fail", ("--no-fail",), (), tagged("invalid")),
    OptionSet("propose_implicit", (), ("-xi",), tagged("ts")),
    OptionSet("propose_little", (), ("-xe",), tagged("ts")),
    OptionSet("prefer_big", ("+xb",), ("-xb",), tagged("ts")),
    OptionSet("prefer_deflated", ("+xd",), ("-xd",), tagged("ts")),
    OptionSet("accept_implicit_only", ("+xi",), (), tagged("ts")),
    OptionSet("single_process", ("--single-process",), (), tagged("ts", "charset")),
]


def differences(reference: dict[str, differential.Session],
                candidate: dict[str, differential.Session],
                label: str) -> Iterator[str]:
    """Every difference across the AE sessions of one option set."""
    for ae, session in reference.items():
        yield from differential.compare(session, candidate[ae], f"{label}/{ae}")


@pytest.mark.parametrize("option_set", OPTION_SETS, ids=lambda o: o.name)
def test_same_answers(built: Corpus, option_set: OptionSet) -> None:
    """Every selected query gets the same statuses and the same response multiset."""
    queries = [q for q in QUERIES if option_set.select(q) and "three_sps" not in q.tags]
    reference, candidate = run_both(built, option_set.name, queries, option_set.server,
                                    option_set.findscu)
    compared = sum(differential.responses_compared(s) for s in reference.values())
    assert compared > 0, "the reference answered nothing: the corpus or harness is broken"
    found = list(differences(reference, candidate, option_set.name))
    assert not found, (f"{len(found)} differences over {len(queries)} queries "
                       f"({compared} reference responses):\n" + "\n".join(found))


def test_harness_detects_a_difference(built: Corpus) -> None:
    """The comparison is not blind: -cs0 against -cs1 must differ in (0008,0005)."""
    query = next(q for q in QUERIES if q.name == "c_latin1_name")
    groups = by_ae([query], built.files)
    plain = run_side("wlmscpfs", built, "harness-cs0", (), (), groups)
    with_charset = run_side("wlmscpfs", built, "harness-cs1", ("-cs1",), (), groups)
    found = list(differences(plain, with_charset, "harness"))
    assert any("(0008,0005)" in line for line in found), found


def single(built: Corpus, name: str) -> dict[str, Path]:
    """One query as a findscu group."""
    return {name: built.files[name]}


def only_outcome(sessions: dict[str, differential.Session]) -> differential.Outcome:
    """The outcome of a run that sent exactly one query."""
    (session,) = sessions.values()
    (outcome,) = session.outcomes.values()
    return outcome


def test_departure_institutional_department_name(built: Corpus) -> None:
    """(0008,1040) is a return key in wlmd; 3.6.7 strips it and answers 0xFF01."""
    if differential.candidate_is_wlmscpfs():
        pytest.skip("a departure cannot hold for wlmscpfs against itself")
    query = Query("d_department", "EDGE", corpus.lines(
        "(0010,0020) LO [EDGE013]", "(0008,1040) LO []", "(0010,0010) PN []"))
    files = {query.name: query.write(built.work)}
    reference, candidate = (
        only_outcome(run_side(kind, built, "department", (), (), {"EDGE": files}))
        for kind in ("wlmscpfs", "wlmd"))
    assert [s for s, _ in reference.responses] == ["0xff01"]
    [(status, text)] = candidate.responses
    assert status == "0xff00"
    assert "(0008,1040) LO b'RADIOLOGY DEPT'" in text
    [(_, expected)] = reference.responses
    without = "\n".join(line for line in text.splitlines() if "(0008,1040)" not in line)
    assert without == expected


def test_departure_nse_zero_item_sps(built: Corpus) -> None:
    """-nse with a zero-item SPS kills the wlmscpfs child; wlmd answers with empty SPS."""
    if differential.candidate_is_wlmscpfs():
        pytest.skip("a departure cannot hold for wlmscpfs against itself")
    files = single(built, "s_sps_zero_items")
    reference = only_outcome(run_side("wlmscpfs", built, "nse0", ("-nse",), (),
                                      {"EDGE": files}))
    candidate = only_outcome(run_side("wlmd", built, "nse0", ("-nse",), (), {"EDGE": files}))
    plain = only_outcome(run_side("wlmscpfs", built, "nse0-plain", (), (),
                                  {"EDGE": single(built, "m_universal")}))
    assert reference.final is None
    assert candidate.final == "0x0000"
    assert sum(candidate.responses.values()) == sum(plain.responses.values())
    assert all("(0040,0100) SQ items=0" in text for _, text in candidate.responses)


def test_departure_no_fail_three_sps_items(built: Corpus) -> None:
    """--no-fail keeps only the first SPS item in wlmd (3.6.7 keeps items 1 and 3)."""
    if differential.candidate_is_wlmscpfs():
        pytest.skip("a departure cannot hold for wlmscpfs against itself")
    three = single(built, "v_three_sps_items")
    first = single(built, "v_three_sps_first_item")
    candidate = only_outcome(run_side("wlmd", built, "sps3", ("--no-fail",), (),
                                      {"EDGE": three}))
    reference = only_outcome(run_side("wlmscpfs", built, "sps3", ("--no-fail",), (),
                                      {"EDGE": first}))
    assert reference.final == candidate.final == "0x0000"
    assert candidate.responses == reference.responses


# --- -v logs ---------------------------------------------------------------------------------
# Lines only one side prints, each a documented difference (man/wlmd.8, LOGGING): wlmd's
# association summary line, wlmscpfs's refusal of the harness's readiness probe, wlmscpfs's
# start notice and wlmd's stop line, wlmd's "Invalid query" summary, and wlmscpfs's
# complaints about files (wlmd reports a file it cannot use once, when it reads it), the
# type 2 sequences it adds to each response and its AddStatusDetail error.
ONE_SIDE = re.compile(r"^[IWE]: (Refusing Association |Association Received \(\S*: -> \)|"
                      r"association from |stopped$|\(notice: dcmdata auto correction|"
                      r"Invalid query from |DcmElement: |Could not read worklist file |"
                      r"Worklist file .* is incomplete|Added missing type 2 |"
                      r"AddStatusDetail: INTERNAL ERROR)")
UNUSABLE = re.compile(r'^W: (?:Could not read worklist file|Worklist file) "([^"]+)"')
# Sequence and item lengths in response dumps: wlmscpfs prints those of the request's items
# (its response copies them), wlmd those of the response it sends.
LENGTH = re.compile(r"^(I: +\([0-9a-f]{4},[0-9a-f]{4}\) (?:SQ|na) \(.*\) +#)\s*\d+,")
# A UID's NUL padding inside response items: wlmscpfs shows it or not depending on how its
# copy of the item came about; wlmd always shows it there.
ITEM_UID_PADDING = re.compile(r"^(I:  +\([0-9a-f]{4},[0-9a-f]{4}\) UI \[[^]]*?)\x00?\]")
# wlmscpfs prints a well-known UID by its DCMTK name (=Name); wlmd prints the UID.
KNOWN_UID = re.compile(r" UI (?:=\S+|\[1\.2\.840\.10008\.[0-9.]+\x00?\]) +#")


def verbose_lines(log: Path, db: Path, after: str | None = None) -> Counter[str]:
    """The -v log of the queries, as a multiset of normalised lines (order is not compared:
    wlmscpfs visits files in directory order, wlmd in its stable order). ``after``: skip the
    log up to the line holding it (wlmd's preload checks every file once at start)."""
    text = log.read_bytes().decode("utf-8", "surrogateescape")
    if after is not None:
        text = text[text.index(after):].split("\n", 1)[1]
    unusable = {match.group(1) for line in text.splitlines() if (match := UNUSABLE.match(line))}
    lines: Counter[str] = Counter()
    for line in text.splitlines():
        if ONE_SIDE.match(line) or any(f'file "{path}" is complete' in line for path in unusable):
            continue
        line = line.replace(str(db), "<db>")
        line = re.sub(r"^I: Association Received \([^:]+:", "I: Association Received (<peer>:",
                      line)  # wlmscpfs names the peer host, wlmd gives its address
        line = re.sub(r"(does not match query): .*", r"\1", line)  # wlmd's explanation
        line = re.sub(r"Response \d+ \(", "Response N (", line)
        line = re.sub(r"result no\. \d+", "result no. N", line)
        if match := ITEM_UID_PADDING.match(line):  # NUL and the column padding it shifts
            line = re.sub(r"\] +#", "] #", match.group(1) + line[match.end() - 1:])
        line = KNOWN_UID.sub(" UI <known UID> #", line)
        lines[LENGTH.sub(r"\1 <len>,", line)] += 1
    return lines


def test_verbose_logs_match_wlmscpfs(built: Corpus) -> None:
    """At -v both servers log the same messages for every query of the corpus: the C-FIND
    message, the request and expanded identifiers, the search mask checks, one pair of lines
    per worklist file, the matching results, each response and its status detail (paths,
    order and the documented differences aside)."""
    if differential.candidate_is_wlmscpfs():
        pytest.skip("the candidate's log is cut at wlmd's 'listening on' line")
    queries = [q for q in QUERIES if "three_sps" not in q.tags]
    run_both(built, "verbose", queries, ("-v", "--single-process"))
    out = built.work / "verbose"
    expected = verbose_lines(out / "wlmscpfs" / "server.log", built.db)
    got = verbose_lines(out / "wlmd" / "server.log", built.db, after=" listening on ")
    assert expected["I: Find SCP Request Identifiers:"] > len(queries) - 5
    assert sum(n for line, n in expected.items() if line.endswith(" matches query")) > 100
    assert expected["W: Status Detail:"] > 10
    assert expected["I: Association Received (<peer>:FINDSCU -> EDGE)"] == 1
    assert expected["I: Association Release"] > 5
    missing, extra = expected - got, got - expected
    assert not missing and not extra, (
        f"only in wlmscpfs: {sorted(missing.items())[:40]}\n"
        f"only in wlmd: {sorted(extra.items())[:40]}")
