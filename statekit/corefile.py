"""The Corefile's syntax: a lexer and a block parser that keep every byte where it was.

CoreDNS reads its Corefile with the Caddy v1 ``caddyfile`` lexer (``coredns/caddy``);
this module follows that lexer rule for rule, checked against CoreDNS 1.15:

- tokens are separated by whitespace (Go's ``unicode.IsSpace``); a ``\\r`` is dropped and
  does not end a token (so CRLF files read like LF files);
- ``#`` where a token starts (outside quotes) starts a comment to the end of the line;
  inside a word it ends the word and drops the rest of that word only: ``bind a#b c``
  binds ``a`` and ``c`` (Caddy's lexer forgets the comment at the token's end);
- a token that starts with ``"`` runs to the next unescaped ``"`` (newlines included);
  only ``\\"`` is an escape, any other backslash stays as it is;
- a backtick is an ordinary character (Caddy v2 quotes with it, CoreDNS does not);
- ``{`` and ``}`` are braces whenever a whole token is one, quoted or not;
- ``{$ENV}`` placeholders are expanded per token by CoreDNS, after lexing: here they stay
  one opaque token (a key made of one has an unknown zone).

Where CoreDNS is more lenient (an unterminated quote at the end, a ``}`` ending a block
without braces, a key list ending in a comma), this parser refuses: statekit edits only
what it reads the way CoreDNS does.

The parser finds the top-level items: server blocks (keys on the first line, or more
lines after a trailing comma, then a ``{ ... }`` body, or no braces at all for a file's
only block), snippets ``(name) { ... }`` and ``import`` lines. For each block it gives the
keys, the byte span ``[start, end)`` from the first key to the closing brace, the start
line, the addresses it binds and the ``# statekit:<id>`` marker directly above it.

Input is capped (:data:`MAX_BYTES`, :data:`MAX_TOKENS`, :data:`MAX_DEPTH`) and parsed in
one linear pass: whole runs of text are handed to ``str.find`` and ``str.split``, never
walked a character at a time in Python.

Editing (:func:`rewrite`, and :func:`insert`, :func:`replace`, :func:`remove` for one
block) works on bytes and touches only the owned region; :func:`remove` is the exact
inverse of :func:`insert`, and an edit never gives another block a marker.
"""

from __future__ import annotations

from statekit.digits import digits
from statekit.typeshim import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

MARKER = "# statekit:"
#: Caps on a Corefile statekit edits; over one, the file is left alone and the state fails.
MAX_BYTES = 1 << 20
MAX_TOKENS = 100_000
MAX_DEPTH = 64  # braces nested in a block
_ID_START = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS = _ID_START + "_-"
_SPACES = (" \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
           "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")  # Go's unicode.IsSpace
_GO_SPACE = frozenset(_SPACES)
_DEFAULT_PORTS = {"dns": 53, "tls": 853, "quic": 853, "grpc": 443, "https": 443, "h3": 443}
#: ``str.split()`` ends a word where Go would not: at ``\x1c``-``\x1f`` (no space to Go)
#: and at ``\r`` (dropped inside a token). Splitting runs on a copy where they are NUL.
_SPLIT_ODD = "\r\x1c\x1d\x1e\x1f"
_NOT_SPACE = {ord(c): 0 for c in _SPLIT_ODD}
_BOM = "\ufeff"
_BLANK_LINES = "\n" * 64  # skipped at once
_MAX_BINDS = 64  # binds of a block, its snippets' included, that are worth knowing
_TOO_MANY = "(more binds than statekit follows)"  # no address: any address


class CorefileError(ValueError):
    """The Corefile cannot be parsed (CoreDNS would refuse it too), or is over a cap."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class Token(Record):
    """One token: its value (quotes and escapes resolved) and where it was."""

    text: str
    start: int
    end: int
    line: int
    end_line: int
    quoted: bool = False

    @property
    def is_open(self) -> bool:
        return self.text == "{"

    @property
    def is_close(self) -> bool:
        return self.text == "}"


class Comment(Record):
    text: str
    start: int
    line: int
    first_on_line: bool


class Key(Record):
    """A server block key, ``[scheme://]zone[:port]``; ``zone`` is None when unknowable."""

    raw: str
    scheme: str
    zone: str | None
    port: int | None


class Block(Record):
    """A top-level server block or snippet.

    ``binds`` are the arguments of its ``bind`` lines, then those of the snippets it
    imports; what cannot be known here (an imported file, a ``{$ENV}`` directive) is listed
    as written, which is no address: a reader takes it as any address (fail closed).
    """

    keys: tuple[str, ...]
    start: int
    end: int
    line: int
    binds: tuple[str, ...] = ()
    snippet: bool = False
    marker: str | None = None
    marker_start: int | None = None
    braced: bool = True
    imports: tuple[str, ...] = ()

    @property
    def parsed_keys(self) -> tuple[Key, ...]:
        return tuple(parse_key(k) for k in self.keys)


class Import(Record):
    args: tuple[str, ...]
    line: int


class Corefile(Record):
    data: bytes
    blocks: tuple[Block, ...]
    imports: tuple[Import, ...] = ()

    def servers(self) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if not b.snippet)

    def owned_by(self, owner: str) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.marker == owner and not b.snippet)


# --- lexer -------------------------------------------------------------------------


def is_space(ch: str) -> bool:
    """Go's ``unicode.IsSpace``."""
    return ch in _GO_SPACE


class _Lexer:
    """Tokens as parallel lists (one Python object per token would be most of the cost);
    comments only for :func:`lex` (a parse finds a marker from its block)."""

    def __init__(self, text: str, all_comments: bool) -> None:
        self.text = text
        self.odd = any(c in text for c in _SPLIT_ODD)
        self.scan = text.translate(_NOT_SPACE) if self.odd else text
        self.all_comments = all_comments
        self.values: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.lines: list[int] = []
        self.end_lines: list[int] = []
        self.quoted: list[int] = []  # indices of quoted tokens
        self.comments: list[Comment] = []

    def run(self) -> _Lexer:
        text, n = self.text, len(self.text)
        i, line = (1 if text.startswith(_BOM) else 0), 1
        while i < n:
            eol = text.find("\n", i)
            eol = n if eol < 0 else eol
            if i < eol:  # a line of blanks, or of a comment after blanks, is skipped here
                hash_at = text.find("#", i, eol)
                head = self.scan[i:eol if hash_at < 0 else hash_at]
                if (head and not head.isspace()) or (hash_at >= 0 and self.all_comments):
                    eol, line = self._line(i, eol, line)
            i, line = eol + 1, line + 1
            while text.startswith(_BLANK_LINES, i):
                i, line = i + len(_BLANK_LINES), line + len(_BLANK_LINES)
        return self

    def _line(self, i: int, eol: int, line: int) -> tuple[int, int]:
        """Lex from ``i`` to the end of the line ``eol`` (a quoted token may move it on);
        returns where the last line lexed ends and its number."""
        text = self.text
        hash_at = text.find("#", i, eol)
        while i < eol:
            if 0 <= hash_at < i:  # that '#' was in a quoted token, or cut a word
                hash_at = text.find("#", i, eol)
            stop = eol if hash_at < 0 else hash_at
            quote = text.find('"', i, stop)
            if quote >= 0:
                self._bare(i, quote, line)
                if self._glued(i, quote):  # a quote inside a word is a character
                    i = self._extend(quote, stop)
                    if i == hash_at:
                        i = self._word_end(hash_at, eol)
                        self._comment(hash_at, i, line)
                    continue
                i, end_line = self._quoted(quote, line)
                if end_line != line:
                    line, eol = end_line, text.find("\n", i)
                    eol = len(text) if eol < 0 else eol
                    hash_at = text.find("#", i, eol)
                continue
            self._bare(i, stop, line)
            if hash_at < 0:
                break
            if not self._glued(i, hash_at):
                self._comment(hash_at, eol, line)
                break
            i = self._word_end(hash_at, eol)  # Caddy: a '#' in a word drops the word's rest
            self._comment(hash_at, i, line)
        return eol, line

    def _bare(self, i: int, stop: int, line: int) -> None:
        """The tokens of ``text[i:stop]``, which has no quote and no comment."""
        if i >= stop:
            return
        seg, pos, text = self.scan[i:stop], 0, self.text
        for part in seg.split():
            at = seg.find(part, pos)
            pos = at + len(part)
            start, end, value = i + at, i + pos, part
            if self.odd:
                value = text[start:end]
                if "\r" in value:
                    start += len(value) - len(value.lstrip("\r"))
                    end -= len(value) - len(value.rstrip("\r"))
                    value = value.replace("\r", "")
                    if not value:
                        continue
            self._token(value, start, end, line, line)

    def _glued(self, i: int, at: int) -> bool:
        """Whether ``at`` is inside a word (a ``\\r`` is no space there): a quote only opens
        a quoted token, and a ``#`` a comment to the end of the line, where a token starts."""
        k = at
        while k > i and self.text[k - 1] == "\r":
            k -= 1
        return k > i and not is_space(self.text[k - 1])

    def _word_end(self, at: int, stop: int) -> int:
        """The first space (not ``\\r``) from ``at`` on, or ``stop``; linear in the word's
        length (a window that grows)."""
        size = 64
        while at + size < stop:
            word = self.scan[at:at + size].split(None, 1)[0]
            if len(word) < size:
                return at + len(word)
            size *= 4
        words = self.scan[at:stop].split(None, 1)
        return at + len(words[0]) if words else at

    def _extend(self, quote: int, stop: int) -> int:
        """The last token runs on through the ``"`` to the next space (or ``#``)."""
        end = self._word_end(quote, stop)
        start = self.starts[-1]
        value = self.text[start:end]
        self.values[-1] = value.replace("\r", "")
        self.ends[-1] = start + len(value.rstrip("\r"))
        return end

    def _quoted(self, quote: int, line: int) -> tuple[int, int]:
        """A quoted token from ``quote``; returns the index after it and its last line."""
        text, j = self.text, quote + 1
        while True:
            close = text.find('"', j)
            if close < 0:
                raise CorefileError(line, "unterminated quoted string")
            back = close
            while back - 1 > quote and text[back - 1] == "\\":
                back -= 1
            if (close - back) % 2 == 0:  # an even run of backslashes escapes themselves
                break
            j = close + 1
        content = text[quote + 1:close]
        end_line = line + content.count("\n")
        self.quoted.append(len(self.values))
        self._token(content.replace('\\"', '"'), quote, close + 1, line, end_line)
        return close + 1, end_line

    def _token(self, value: str, start: int, end: int, line: int, end_line: int) -> None:
        self.values.append(value)
        self.starts.append(start)
        self.ends.append(end)
        self.lines.append(line)
        self.end_lines.append(end_line)
        self._count(line)

    def _comment(self, at: int, eol: int, line: int) -> None:
        if self.all_comments:
            first = not self.end_lines or self.end_lines[-1] < line
            self.comments.append(Comment(self.text[at:eol], at, line, first))

    def _count(self, line: int) -> None:
        if len(self.values) > MAX_TOKENS:
            raise CorefileError(line, f"more than {MAX_TOKENS} tokens: statekit edits no "
                                "Corefile this large (split it with import)")

    def tokens(self) -> list[Token]:
        quoted = set(self.quoted)
        return [Token(*fields, index in quoted) for index, fields in enumerate(zip(
            self.values, self.starts, self.ends, self.lines, self.end_lines, strict=True))]


def lex(text: str) -> tuple[list[Token], list[Comment]]:
    """The tokens and comments of ``text``, in order."""
    _check_size(len(text.encode("utf-8", "surrogateescape")))
    lexer = _Lexer(text, all_comments=True).run()
    return lexer.tokens(), lexer.comments


def _check_size(size: int) -> None:
    if size > MAX_BYTES:
        raise CorefileError(1, f"{size} bytes, over the {MAX_BYTES}-byte limit of a Corefile "
                            "statekit edits (split it with import)")


# --- parser ------------------------------------------------------------------------


def parse_key(raw: str) -> Key:
    """``dns://example.org:1053`` -> scheme dns, zone ``example.org.``, port 1053."""
    text = raw.rstrip(",")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "dns", text
    host, port = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and digits(tail) and not head.endswith(":"):
        host, port = head, int(tail)
    elif colon and not tail:
        host = head
    if "{" in host or "}" in host:
        return Key(raw, scheme.lower(), None, port)
    return Key(raw, scheme.lower(), normalise_zone(host), port or _DEFAULT_PORTS.get(
        scheme.lower()))


def normalise_zone(name: str) -> str:
    """Lower case, one trailing dot; ``""`` and ``"."`` are the root."""
    name = name.strip(_SPACES).lower().rstrip(".")
    return f"{name}." if name else "."


class _Parser:
    def __init__(self, text: str, lexer: _Lexer) -> None:
        self.text = text
        self.v, self.s, self.e = lexer.values, lexer.starts, lexer.ends
        self.ln, self.el = lexer.lines, lexer.end_lines
        self.n = len(self.v)
        self.i = 0
        self.blocks: list[Block] = []
        self.imports: list[Import] = []

    def run(self) -> None:
        while self.i < self.n:
            text = self.v[self.i]
            if text in ("{", "}"):
                raise CorefileError(self.ln[self.i], f"unexpected '{text}' at the top level")
            if text == "import" and not self._same_line(self.i):  # else a key, to Caddy
                line = self.ln[self.i]
                self.imports.append(Import(tuple(self._args()), line))
            else:
                self._block()

    def _same_line(self, index: int) -> bool:
        return 0 < index < self.n and self.el[index - 1] == self.ln[index]

    def _args(self) -> list[str]:
        """The tokens after the current one on its line, up to a ``{``."""
        self.i += 1
        args: list[str] = []
        while self._same_line(self.i) and self.v[self.i] != "{":
            args.append(self.v[self.i])
            self.i += 1
        return args

    def _keys(self) -> list[str]:
        """Caddy's ``addresses``: keys to the end of the line, or on after a trailing comma;
        an empty (``""``) token is no key."""
        keys: list[str] = []
        expecting = False
        while self.v[self.i] != "{":
            text = self.v[self.i]
            if text:
                expecting = text.endswith(",")
                keys.append(text)
            self.i += 1
            if self.i == self.n or (not expecting and not self._same_line(self.i)):
                break
        if expecting:
            raise CorefileError(self.ln[self.i - 1], "expected another key after the comma")
        return keys

    def _block(self) -> None:
        first = self.i
        keys = self._keys()
        snippet = len(keys) == 1 and keys[0].startswith("(") and keys[0].endswith(")")
        braced = self.i < self.n and self.v[self.i] == "{"
        if braced:
            self.i += 1
            end, binds, imports = self._directives(first, 1)
        elif self.blocks or snippet:
            raise CorefileError(self.ln[first], f"expected '{{' after {self.v[first]!r}")
        else:
            end, binds, imports = self._directives(first, 0)
        marker, marker_start = self._marker(first)
        self.blocks.append(Block(
            keys=tuple(keys), start=self.s[first], end=end, line=self.ln[first], binds=binds,
            snippet=snippet, marker=marker, marker_start=marker_start, braced=braced,
            imports=imports))

    def _directives(self, first: int, top: int) -> tuple[int, tuple[str, ...], tuple[str, ...]]:
        """From after the ``{`` (``top`` 1) to the closing ``}``, or to the end of the file
        for a block without braces (``top`` 0). A directive starts the body or a line."""
        body, depth, binds, imports = self.i, top, list[str](), list[str]()
        while self.i < self.n:
            k, text = self.i, self.v[self.i]
            starts = (k == body and top == 1) or self.ln[k] > self.el[k - 1]
            depth += (text == "{") - (text == "}")
            if depth > MAX_DEPTH:
                raise CorefileError(self.ln[k], f"braces nested over {MAX_DEPTH} deep")
            if depth == top and starts and text in ("bind", "import"):
                (binds if text == "bind" else imports).extend(self._args())
                continue
            if depth == top and starts and ("{$" in text or "{%" in text):
                binds.append(text)  # a directive from the environment: perhaps a bind
            self.i += 1
            if depth < top:
                return self._closed(k, top, starts), tuple(binds), tuple(imports)
        if top:
            raise CorefileError(self.ln[first], "block is not closed (missing '}')")
        return self.e[self.n - 1], tuple(binds), tuple(imports)

    def _closed(self, k: int, top: int, starts: bool) -> int:
        if not top:
            raise CorefileError(self.ln[k], "unexpected '}' (the block has no '{')")
        if not starts:
            raise CorefileError(self.ln[k], "unexpected '}': a block closes on its own line")
        return self.e[k]

    def _marker(self, first: int) -> tuple[str | None, int | None]:
        """The owner in a ``# statekit:<id>`` line directly above the block's first key,
        which must be the first token on its line (the line above then holds no token)."""
        line, text = self.ln[first], self.text
        if first > 0 and self.el[first - 1] >= line - 1:
            return None, None
        key_line = line_start(text, self.s[first])
        if key_line <= 1:
            return None, None
        above = line_start(text, key_line - 1)
        row = text[above:key_line - 1]
        owner = marker_owner(_lstrip_space(row).rstrip("\r"))
        return (None, None) if owner is None else (owner, above)


def _lstrip_space(text: str) -> str:
    return text.lstrip(_SPACES)


def line_start(text: str, at: int) -> int:
    """The start of the line holding ``at`` (after a byte order mark on the first)."""
    start = text.rfind("\n", 0, at) + 1
    return 1 if start == 0 and text.startswith(_BOM) and at > 0 else start


def marker_owner(text: str) -> str | None:
    """The id in a whole-line ``# statekit:<id>`` comment (trailing blanks allowed)."""
    if not text.startswith(MARKER):
        return None
    ident = text[len(MARKER):].rstrip(" \t")
    if ident and ident[0] in _ID_START and not ident.strip(_ID_CHARS):
        return ident
    return None


def parse(data: bytes) -> Corefile:
    """Parse ``data``; offsets in the result are byte offsets into ``data``."""
    _check_size(len(data))
    text = data.decode("utf-8", "surrogateescape")
    parser = _Parser(text, _Lexer(text, all_comments=False).run())
    parser.run()
    blocks = _with_snippet_binds(parser.blocks)
    return Corefile(data, tuple(_in_bytes(text, blocks)), tuple(parser.imports))


def _with_snippet_binds(blocks: list[Block]) -> list[Block]:
    """Each server block's binds with those of the snippets it imports (and they import);
    an import of anything else (a file) stays as written: unknown. Over
    :data:`_MAX_BINDS` (a crafted fan-out), the rest is one unknown entry."""
    snippets = {b.keys[0][1:-1]: b for b in blocks if b.snippet}
    brought: dict[str, tuple[str, ...]] = {}
    out = []
    for block in blocks:
        binds = list(block.binds)
        for name in block.imports:
            if name not in brought:
                brought[name] = _imported_binds(name, snippets)
            binds += brought[name]
            if len(binds) > _MAX_BINDS:
                binds = [*block.binds[:_MAX_BINDS], _TOO_MANY]
                break
        out.append(block._replace(binds=tuple(binds)) if block.imports else block)
    return out


def _imported_binds(name: str, snippets: dict[str, Block]) -> tuple[str, ...]:
    binds, todo, seen = list[str](), [name], set[str]()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        snippet = snippets.get(current)
        if snippet is None:
            binds.append(current)
        else:
            binds += snippet.binds
            todo += snippet.imports
        if len(binds) > _MAX_BINDS or len(seen) > _MAX_BINDS:
            return (_TOO_MANY,)
    return tuple(binds)


def _in_bytes(text: str, blocks: list[Block]) -> list[Block]:
    """Character offsets -> byte offsets (the same in an ASCII file), in one pass."""
    if text.isascii():
        return blocks
    wanted = sorted({o for b in blocks for o in (b.start, b.end, b.marker_start)
                     if o is not None})
    to_byte, prev, total = {}, 0, 0
    for offset in wanted:
        total += len(text[prev:offset].encode("utf-8", "surrogateescape"))
        to_byte[offset], prev = total, offset
    return [b._replace(start=to_byte[b.start], end=to_byte[b.end],
                       marker_start=None if b.marker_start is None
                       else to_byte[b.marker_start]) for b in blocks]


# --- editing -----------------------------------------------------------------------


def owned_text(owner: str, block: str) -> bytes:
    """The marker line and ``block`` (which ends with its closing brace, no newline)."""
    return f"{MARKER}{owner}\n{block}".encode()


def rewrite(data: bytes, edits: Sequence[tuple[Block, bytes | None]],
            added: Sequence[bytes] = ()) -> bytes:
    """Replace each block of ``edits`` (owned, or adopted) by its bytes or remove it (None),
    then append ``added`` after a blank line each: in one pass, with the result of one edit
    at a time from the last block back, then one insert at a time."""
    pieces: list[bytes] = []  # the result after data[:pos], in reverse
    pos, head = len(data), b""  # head: the first byte of that result
    for block, text in sorted(edits, key=lambda edit: edit[0].start, reverse=True):
        start, lead = _edit_start(data, block)
        if text is None and not lead:
            start, end, piece = _removal(data, start, block.end, pos, head)
        elif text is None:  # a block that does not start its line: only its own bytes
            end, piece = block.end, b""
        else:  # nothing may stick to the new block's closing brace: `}# note` would make
            # CoreDNS read `note` as a key (a '#' inside a word drops only that word's rest)
            end, piece = block.end, lead + text
            if data[end:end + 1] not in (b"", b" ", b"\t", b"\r", b"\n"):
                piece += b"\n"
        pieces += [data[end:pos], piece]
        head = (piece + data[end:pos])[:1] or head
        pos = start
    out = data[:pos] + b"".join(reversed(pieces))
    return _append(out, added)


def _edit_start(data: bytes, block: Block) -> tuple[int, bytes]:
    """Where an edit of ``block`` starts, and what the new text needs before it: its marker
    line; else the start of its line when only blanks precede it there; else the block's
    first key, after a new line (so the marker above the new text is a whole line)."""
    if block.marker_start is not None:
        return block.marker_start, b""
    start = data.rfind(b"\n", 0, block.start) + 1
    if start == 0 and data.startswith(_BOM.encode()):
        start = len(_BOM.encode())
    prefix = data[start:block.start].decode("utf-8", "surrogateescape")
    if not _lstrip_space(prefix):
        return start, b""
    return block.start, b"\n"


def _removal(data: bytes, start: int, end: int, pos: int, head: bytes
             ) -> tuple[int, int, bytes]:
    """What removing the block ``data[start:end]`` (from a line start) takes: what follows
    it on its line unless that holds a token, its line's end, and the blank line
    :func:`insert` put before it. ``data[pos:]`` is already rewritten and starts with
    ``head``. A marker line left directly above the text that follows would claim it: a
    blank line stays between them."""

    def at(index: int) -> bytes:
        return data[index:index + 1] if index < pos else head

    eol = data.find(b"\n", end, pos)
    eol = pos if eol < 0 else eol
    rest = data[end:eol].decode("utf-8", "surrogateescape")
    # after a quoted token (an unbraced block's last key) a '#' comments out the line
    kept = None if data[end - 1:end] == b'"' and rest.startswith("#") else _rest_of_line(rest)
    end = eol if kept is None else end + len(kept.encode("utf-8", "surrogateescape"))
    if at(end) == b"\n":
        end += 1
        if data[start - 2:start] == b"\n\n":
            start -= 1
    elif not at(end) and data[start - 2:start] == b"\n\n":
        start -= 2
    claimed = at(end) not in (b"", b"\n") and _marker_line_before(data, start)
    return start, end, b"\n" if claimed else b""


def _rest_of_line(rest: str) -> str | None:
    """What follows a closing brace on its line and goes with it when the block is removed:
    None for all of it (blanks and a comment), else the rest of a word a ``#`` cut there
    (CoreDNS reads no more of it; at a line start it would comment out the line)."""
    cut = 0
    if rest.startswith("#"):
        words = rest.translate(_NOT_SPACE).split(None, 1)
        cut = len(words[0])
    left = rest[cut:].lstrip(_SPACES)
    return None if not left or left.startswith("#") else rest[:cut]


def _marker_line_before(data: bytes, at: int) -> bool:
    """Whether the line that ends just before ``at`` (a line start) is a marker line."""
    if at == 0 or data[at - 1:at] != b"\n":
        return False
    line = data[data.rfind(b"\n", 0, at - 1) + 1:at - 1].decode("utf-8", "surrogateescape")
    return marker_owner(_lstrip_space(line.lstrip(_BOM)).rstrip("\r")) is not None


def _append(data: bytes, added: Sequence[bytes]) -> bytes:
    """:func:`insert` of each of ``added`` in turn, in one join."""
    parts = [data]
    empty, newline = not data, data.endswith(b"\n")
    for owned in added:
        if empty:
            parts += [owned, b"\n"]
        elif newline:
            parts += [b"\n", owned, b"\n"]
        else:
            parts += [b"\n\n", owned]
        empty, newline = False, empty or newline
    return b"".join(parts)


def insert(data: bytes, owned: bytes) -> bytes:
    """Append ``owned`` after a blank line; :func:`remove` undoes it exactly."""
    return _append(data, [owned])


def replace(data: bytes, block: Block, owned: bytes) -> bytes:
    """Put ``owned`` where the owned ``block`` and its marker line are."""
    return rewrite(data, [(block, owned)])


def remove(data: bytes, block: Block) -> bytes:
    """Remove the owned ``block``, its marker line and the blank line :func:`insert` added."""
    return rewrite(data, [(block, None)])
