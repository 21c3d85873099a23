#!/usr/bin/env python3
"""Generate the roff man pages in man/ from the typer app (STYLE.md "Man pages").

    python scripts/gen_man.py           # (re)write man/*.1
    python scripts/gen_man.py --check   # exit 1 listing stale, missing or extra pages

One page per command: ``mmx.1``, ``mmx-<command>.1``, ``mmx-<group>.1`` and
``mmx-<group>-<command>.1``. Sections follow man-pages(7) order: NAME, SYNOPSIS,
DESCRIPTION, OPTIONS, EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES, SEE ALSO.

A command's docstring gives NAME (first line) and DESCRIPTION (the rest). Paragraphs headed
by a line ``Examples:``, ``Files:``, ``Environment:``, ``Exit status:`` or ``See also:``
become those sections (a ``\\b`` line, click's no-rewrap marker, is dropped). EXIT STATUS and
ENVIRONMENT get the codes and variables every mmx command shares.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer

from mmx import __version__
from mmx.cli import app

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"

SECTION_HEADINGS = {
    "examples": "EXAMPLES",
    "files": "FILES",
    "environment": "ENVIRONMENT",
    "exit status": "EXIT STATUS",
    "see also": "SEE ALSO",
}
ORDER = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"]

COMMON_EXIT = [
    ("0", "Success."),
    ("2", "Usage error: unknown option, bad argument."),
    ("65", "Bad input data (a malformed line, a corrupt file); the rest was processed."),
    ("66", "A named input does not exist."),
    ("69", "A service mmx depends on is unavailable or refused the credentials."),
    ("70", "Internal error (a bug); MMX_DEBUG=1 shows the traceback."),
    ("74", "Reading or writing a local file failed."),
    ("75", "Temporary failure; trying again later may work."),
    ("130", "Interrupted (Ctrl-C)."),
]
COMMON_ENV = [
    ("MMX_HOME", "Where mmx keeps its data, the default ledger among it (default: the platform user data directory, e.g. ~/.local/share/mmx)."),
    ("MMX_DEBUG", "Set to 1 to print tracebacks of errors."),
]


def esc(text: str) -> str:
    """Escape text for roff: backslashes, leading dots and quotes, hyphens in options."""
    text = text.replace("\\", "\\e")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def split_sections(doc: str) -> tuple[str, str, dict[str, str]]:
    """(summary, description, {SECTION: text}) from a command docstring."""
    lines = [ln for ln in (doc or "").strip().splitlines() if ln.strip() != "\b"]
    summary = lines[0].strip() if lines else ""
    body: dict[str, list[str]] = {"DESCRIPTION": []}
    current = "DESCRIPTION"
    for line in lines[1:]:
        key = line.strip().rstrip(":").lower()
        if line.strip().endswith(":") and key in SECTION_HEADINGS and not line.startswith(" "):
            current = SECTION_HEADINGS[key]
            body.setdefault(current, [])
            continue
        body[current].append(line)
    extra = {k: "\n".join(v).strip("\n") for k, v in body.items() if k != "DESCRIPTION"}
    return summary, "\n".join(body["DESCRIPTION"]).strip("\n"), extra


def render_text(text: str) -> str:
    """Paragraphs become .PP; indented lines are kept verbatim in a no-fill block."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip("\n")):
        plines = para.split("\n")
        if all(ln.startswith("    ") or ln.startswith("\t") for ln in plines if ln.strip()):
            out += [".PP", ".RS 4", ".nf", esc("\n".join(ln.strip() for ln in plines)), ".fi", ".RE"]
        else:
            out += [".PP", esc(" ".join(ln.strip() for ln in plines))]
    return "\n".join(out)


def walk(cmd, ctx, path):
    yield path, cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
            yield from walk(sub, sub_ctx, path + [name])


def page_name(path: list[str]) -> str:
    return "-".join(path)


def render_page(path, cmd, ctx, all_pages: list[str]) -> str:
    name = page_name(path)
    title = name.upper()
    summary, description, extra = split_sections(cmd.help or "")
    usage_pieces = cmd.collect_usage_pieces(ctx)
    lines = [
        f'.TH "{esc(title)}" "1" "" "mmx {__version__}" "mmx manual"',
        ".SH NAME",
        f"{esc(name)} \\- {esc(summary.rstrip('.'))}",
        ".SH SYNOPSIS",
        f".B {esc(' '.join(path))}",
        esc(" ".join(usage_pieces)),
        ".SH DESCRIPTION",
        render_text(description or summary),
    ]
    subcommands = []
    if hasattr(cmd, "list_commands"):
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is not None and not getattr(sub, "hidden", False):
                subcommands.append((sub_name, sub.get_short_help_str(limit=200)))
    if subcommands:
        lines += [".SS Commands"]
        for sub_name, short in subcommands:
            lines += [".TP", f".B {esc(sub_name)}", esc(short) + f" See \\fB{esc(page_name(path + [sub_name]))}\\fR(1)."]
    lines.append(".SH OPTIONS")
    records = [p.get_help_record(ctx) for p in cmd.get_params(ctx)]
    for rec in records:
        if rec is None:
            continue
        opts, help_text = rec
        lines += [".TP", f".B {esc(opts)}", esc(help_text or "")]
    for arg in (p for p in cmd.get_params(ctx) if p.param_type_name == "argument"):
        help_text = getattr(arg, "help", None) or ""
        lines += [".TP", f".I {esc(arg.metavar or (arg.name or '').upper())}", esc(help_text)]
    lines.append(".SH EXIT STATUS")
    if "EXIT STATUS" in extra:
        lines.append(render_text(extra["EXIT STATUS"]))
    for code, meaning in COMMON_EXIT:
        lines += [".TP", f".B {code}", esc(meaning)]
    lines.append(".SH ENVIRONMENT")
    if "ENVIRONMENT" in extra:
        lines.append(render_text(extra["ENVIRONMENT"]))
    for var, meaning in COMMON_ENV:
        lines += [".TP", f".B {var}", esc(meaning)]
    for section in ("FILES", "EXAMPLES"):
        if section in extra:
            lines += [f".SH {section}", render_text(extra[section])]
    see_also = sorted({p for p in all_pages if p != name and (p == "mmx" or p.startswith(path[0] + "-" if len(path) > 1 else "mmx-"))})
    if len(path) > 1:
        see_also = sorted({"mmx", *(p for p in all_pages if p != name and p.startswith(page_name(path[:2])))})
    lines.append(".SH SEE ALSO")
    lines.append(render_see_also(extra.get("SEE ALSO", ""), see_also))
    return "\n".join(lines) + "\n"


_MAN_REF = re.compile(r"^([A-Za-z0-9_.+-]+)\((\d[a-z]*)\)$")


def render_see_also(text: str, related: list[str]) -> str:
    """One comma-separated list: the docstring's "See also:" items (``name(N)`` pages or
    other references such as a file) first, then the related mmx pages not named there.
    Pages are set ``.BR name (N)``; every item but the last ends with a comma."""
    items = [item.strip() for item in re.split(r",\s*", " ".join(text.split())) if item.strip()]
    named = {m.group(1) for item in items if (m := _MAN_REF.match(item))}
    items += [f"{page}(1)" for page in related if page not in named]
    out = []
    for i, item in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        m = _MAN_REF.match(item)
        out.append(f".BR {esc(m.group(1))} ({m.group(2)}){comma}" if m else esc(item) + comma)
    return "\n".join(out)


def generate() -> dict[str, str]:
    """{file name: roff text} for every command of the app."""
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="mmx")
    entries = list(walk(root, ctx, ["mmx"]))
    names = [page_name(p) for p, _, _ in entries]
    return {f"{page_name(p)}.1": render_page(p, c, cx, names) for p, c, cx in entries}


def main(argv: list[str]) -> int:
    pages = generate()
    if "--check" in argv:
        problems = []
        for fname, text in pages.items():
            path = MAN_DIR / fname
            if not path.exists():
                problems.append(f"missing: man/{fname}")
            elif path.read_text() != text:
                problems.append(f"stale: man/{fname}")
        for path in sorted(MAN_DIR.glob("*.1")):
            if path.name not in pages:
                problems.append(f"extra (no such command): man/{path.name}")
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run: python scripts/gen_man.py", file=sys.stderr)
        return 1 if problems else 0
    MAN_DIR.mkdir(exist_ok=True)
    for path in MAN_DIR.glob("*.1"):
        if path.name not in pages:
            path.unlink()
    for fname, text in pages.items():
        (MAN_DIR / fname).write_text(text)
    print(f"wrote {len(pages)} pages to {MAN_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
