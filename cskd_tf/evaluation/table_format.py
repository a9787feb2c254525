"""Markdown and LaTeX rendering of small result tables (used by :mod:`.report`)."""

from __future__ import annotations

from dataclasses import dataclass

FORMATS = ("markdown", "latex")


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    title: str
    caption: str
    header: list
    rows: list  # list of lists of Cell


# --------------------------------------------------------------------------
# Markdown.
# --------------------------------------------------------------------------


def _md_escape(text: str) -> str:
    # A pipe would end the cell.
    return text.replace("|", "\\|")


def markdown(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = _md_escape(c.text)
        return f"**{text}**" if c.bold else text

    lines = [f"**{_md_escape(table.title)}.** {_md_escape(table.caption)}", ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in table.header) + " |")
    # Left-align the method names, right-align the numbers.
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(table.header) - 1)) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# LaTeX.
# --------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
# Characters that need math mode (or a package) in a plain LaTeX document.
_LATEX_SYMBOLS = {"±": r"$\pm$", "−": r"$-$", "↓": r"$\downarrow$", "↑": r"$\uparrow$",
                  "–": "--"}


def latex_escape(text: str) -> str:
    out = []
    for ch in text:
        out.append(_LATEX_SPECIAL.get(ch) or _LATEX_SYMBOLS.get(ch) or ch)
    return "".join(out)


def latex(table: Table) -> str:
    def cell(c: Cell) -> str:
        text = latex_escape(c.text)
        return rf"\textbf{{{text}}}" if c.bold else text

    spec = "l" + "c" * (len(table.header) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}: {latex_escape(table.caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def render(tables, fmt: str, notes=()) -> str:
    """Tables one after the other, then the notes (as comments in LaTeX)."""
    if fmt == "markdown":
        parts = [markdown(t) for t in tables]
        if notes:
            parts.append("Notes:\n" + "\n".join(f"- {_md_escape(n)}" for n in notes))
        return "\n\n".join(parts) + "\n"
    if fmt == "latex":
        # booktabs for \toprule etc.; stated once so the output pastes as is.
        parts = ["% requires \\usepackage{booktabs}"] + [latex(t) for t in tables]
        parts += [f"% note: {n}" for n in notes]
        return "\n\n".join(parts) + "\n"
    raise ValueError(f"unknown table format {fmt!r}")
