"""What a newcomer met (issue 17): each regression test is named after the item it covers."""

from __future__ import annotations

import re

import orjson
import pytest

from .conftest import ROOT, free_port
from .convex_fake import FakeConvex
from .test_convex_sync import KEY, acked_seq, cli, make_ledger, shoot_events


@pytest.fixture
def fake(tmp_path):
    server = FakeConvex(tmp_path / "convex-state.sqlite", free_port(), key=KEY).start()
    yield server
    server.stop()


# -- ledger sync -l ------------------------------------------------------------------------


def test_issue17_newcomer_ledger_sync_takes_l_like_the_other_ledger_commands(tmp_path, fake):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(20))
    result = cli("ledger", "sync", "--convex", fake.url, "-l", str(path), key=KEY)
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["acked_seq"] == 20 and len(fake.event_ids()) == 20
    for command in ("push", "tail", "sessions", "show", "export", "sync"):
        help_text = cli("ledger", command, "--help").stdout
        assert re.search(r"--ledger\s*-l\b|-l,\s*--ledger", help_text), command


# -- ledger sync: a wrong key with nothing pending ---------------------------------------------


def test_issue17_newcomer_ledger_sync_with_a_wrong_key_and_nothing_pending_exits_69(tmp_path, fake):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(5))
    assert cli("ledger", "sync", "--convex", fake.url, "-l", str(path), key=KEY).exit_code == 0  # all synced
    calls = len(fake.outcomes())
    result = cli("ledger", "sync", "--convex", fake.url, "-l", str(path), key="prod:test|wrong")
    assert result.exit_code == 69, result.stderr
    assert result.stdout == ""
    assert f"Error: Convex at {fake.url} refused the deploy key" in " ".join(result.stderr.split())
    assert fake.outcomes()[calls:] == ["auth"]  # one call, not retried
    assert acked_seq(path, fake) == 5
    # an empty ledger too: the key is checked although there is nothing to send at all
    empty = make_ledger(tmp_path / "empty.sqlite", [])
    assert cli("ledger", "sync", "--convex", fake.url, "-l", str(empty), key="prod:test|wrong").exit_code == 69
    ok = cli("ledger", "sync", "--convex", fake.url, "-l", str(empty), key=KEY)
    assert ok.exit_code == 0 and orjson.loads(ok.stdout)["sent"] == 0


# -- man pages: SEE ALSO ---------------------------------------------------------------------


def test_issue17_newcomer_see_also_is_one_comma_separated_list():
    pages = sorted((ROOT / "man").glob("*.1"))
    assert pages
    for page in pages:
        text = page.read_text()
        section = text.split(".SH SEE ALSO\n", 1)[1].split("\n.SH ", 1)[0].strip("\n").split("\n")
        items = [line for line in section if not line.startswith((".PP", ".RS", ".RE", ".nf", ".fi"))]
        assert items, page.name
        assert all(line.endswith(",") for line in items[:-1]) and not items[-1].endswith(","), (page.name, items)
        names = [m.group(1) for line in items if (m := re.match(r"\.BR (\S+) \(\d\)", line))]
        assert len(names) == len(set(names)), (page.name, "a page listed twice")
    sync = (ROOT / "man" / "mmx-ledger-sync.1").read_text()
    assert ".BR mmx-ledger-sessions (1),\nexamples/convex/README.md,\n.BR mmx (1)," in sync


# -- README: mmx on the PATH ---------------------------------------------------------------


def test_issue17_newcomer_readme_puts_mmx_on_the_path_before_using_it_bare():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    first = blocks[0]
    assert "pip install -e ." in first and ".venv/bin/mmx demo" in first and "\nmmx " not in "\n" + first
    # every later bare `mmx …` (in a code block or inline) comes after the activation
    activate = readme.index("source .venv/bin/activate")
    bare = [m.start() for m in re.finditer(r"(?:^|[`\s|&;(])mmx [a-z]", readme[readme.index(first) + len(first):], re.M)]
    assert bare, "the README uses mmx after its first command"
    assert activate < readme.index(first) + len(first) + bare[0] + 1
    assert readme.index(first) < activate
