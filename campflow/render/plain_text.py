"""HTML and RTF bodies as plain text: the text part of a message that has no text body."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = [
    "html_to_text",
    "rtf_to_text",
]


# --- HTML and RTF as plain text ----------------------------------------------------------------


class _HtmlText(HTMLParser):
    BLOCKS = {"p", "div", "tr", "table", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
              "pre", "hr", "section", "article", "header", "footer", "dl", "dt", "dd"}
    HIDDEN = {"script", "style", "head", "title", "template"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in self.BLOCKS:
            self.out.append("\n\n" if tag in ("p", "table", "ul", "ol") or tag[0] == "h" else "\n")
            if tag == "li":
                self.out.append("- ")
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS and tag != "li":  # the next item starts its own line
            self.out.append("\n")
        elif tag == "a" and self.links:
            href = self.links.pop()
            if href and not href.startswith(("#", "javascript:")) and href not in "".join(self.out[-3:]):
                self.out.append(f" ({href.removeprefix('mailto:')})")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(source: str) -> str:
    """A readable plain-text alternative of an HTML body."""
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    return _tidy("".join(parser.out))


_RTF_TOKEN = re.compile(r"\\([a-zA-Z]{1,32})(-?[0-9]{1,10})? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|(\r\n|\r|\n)|([^\\{}\r\n]+)",
                        re.S)
_RTF_HIDDEN = {"fonttbl", "colortbl", "stylesheet", "info", "pict", "header", "footer", "headerl", "headerr",
               "footerl", "footerr", "object", "listtable", "listoverridetable", "rsidtbl", "generator",
               "xmlnstbl", "themedata", "colorschememapping", "latentstyles", "datastore", "fldinst"}


def rtf_to_text(source: str) -> str:
    """The text of an RTF document (paragraphs, tabs, \\'hh and \\uN characters)."""
    out: list[str] = []
    stack: list[tuple[bool, int]] = []
    hidden, skip_chars, fallback = False, 0, 1
    for word, number, hexa, symbol, brace, newline, text in _RTF_TOKEN.findall(source):
        if brace:
            if brace == "{":
                stack.append((hidden, fallback))
            elif stack:
                hidden, fallback = stack.pop()
            continue
        if newline:
            continue
        if skip_chars and (hexa or text):  # the fallback characters after \uN
            if text:
                text = text[skip_chars:] if len(text) > skip_chars else ""
                skip_chars = 0
            else:
                skip_chars -= 1
                continue
        if word:
            if word in _RTF_HIDDEN:
                hidden = True
            elif word == "uc":
                fallback = int(number or 1)
            elif hidden:
                pass
            elif word in ("par", "line", "sect", "page", "row"):
                out.append("\n")
            elif word == "tab" or word == "cell":
                out.append("\t")
            elif word == "u":
                code = int(number) % 65536
                out.append(chr(code))
                skip_chars = fallback
        elif symbol:
            if symbol == "*":
                hidden = True
            elif not hidden:
                out.append({"~": "\u00a0", "_": "-", "-": ""}.get(symbol, symbol))
        elif hexa and not hidden:
            out.append(bytes([int(hexa, 16)]).decode("cp1252", "replace"))
        elif text and not hidden:
            out.append(text)
    joined = "".join(out)
    # \uN pairs written for characters outside the BMP
    joined = joined.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return _tidy(joined)


def _tidy(text: str) -> str:
    lines = [" ".join(line.split()) if "\t" not in line else line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
