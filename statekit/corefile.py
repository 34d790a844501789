"""The Corefile's syntax: a lexer and a block parser that keep every byte where it was.

CoreDNS reads its Corefile with the Caddy v1 ``caddyfile`` lexer (``coredns/caddy``);
this module follows that lexer rule for rule, checked against CoreDNS 1.15:

- tokens are separated by whitespace (Go's ``unicode.IsSpace``); a ``\\r`` is dropped and
  does not end a token (so CRLF files read like LF files);
- ``#`` outside quotes starts a comment to the end of the line, even inside a word
  (``whoami#note`` is ``whoami``);
- a token that starts with ``"`` runs to the next unescaped ``"`` (newlines included);
  only ``\\"`` is an escape, any other backslash stays as it is;
- a backtick is an ordinary character (Caddy v2 quotes with it, CoreDNS does not);
- ``{`` and ``}`` are braces whenever a whole token is one, quoted or not;
- ``{$ENV}`` placeholders are expanded per token by CoreDNS, after lexing: here they stay
  one opaque token (a key made of one has an unknown zone).

The parser finds the top-level items: server blocks (keys on the first line, or more
lines after a trailing comma, then a ``{ ... }`` body, or no braces at all for a file's
only block), snippets ``(name) { ... }`` and ``import`` lines. For each block it gives the
keys, the byte span ``[start, end)`` from the first key to the closing brace, the start
line, the ``bind`` addresses and the ``# statekit:<id>`` marker directly above it.

Editing (:func:`insert`, :func:`replace`, :func:`remove`) works on bytes and touches only
the owned region; :func:`remove` is the exact inverse of :func:`insert`.
"""

from __future__ import annotations

from statekit.digits import digits
from statekit.typeshim import Record

MARKER = "# statekit:"
_ID_START = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_CHARS = _ID_START + "_-"
_GO_SPACE = frozenset(" \t\n\v\f\r\x85\xa0")
_DEFAULT_PORTS = {"dns": 53, "tls": 853, "quic": 853, "grpc": 443, "https": 443, "h3": 443}


class CorefileError(ValueError):
    """The Corefile cannot be parsed (CoreDNS would refuse it too)."""

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
    """A top-level server block or snippet."""

    keys: tuple[str, ...]
    start: int
    end: int
    line: int
    binds: tuple[str, ...] = ()
    snippet: bool = False
    marker: str | None = None
    marker_start: int | None = None
    braced: bool = True

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
    return ch in _GO_SPACE or (ch > "\xff" and ch.isspace())


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.line = 1
        self.tokens: list[Token] = []
        self.comments: list[Comment] = []

    def run(self) -> tuple[list[Token], list[Comment]]:
        i = 1 if self.text.startswith("\ufeff") else 0
        while i < len(self.text):
            ch = self.text[i]
            if ch == "\n":
                self.line += 1
                i += 1
            elif is_space(ch):
                i += 1
            elif ch == "#":
                i = self._comment(i)
            elif ch == '"':
                i = self._quoted(i)
            else:
                i = self._bare(i)
        return self.tokens, self.comments

    def _comment(self, i: int) -> int:
        end = self.text.find("\n", i)
        end = len(self.text) if end < 0 else end
        first = not self.tokens or self.tokens[-1].end_line < self.line
        self.comments.append(Comment(self.text[i:end], i, self.line, first))
        return end

    def _bare(self, i: int) -> int:
        j = i
        while j < len(self.text) and self.text[j] != "#" and (
                self.text[j] == "\r" or not is_space(self.text[j])):
            j += 1
        end = j
        while self.text[end - 1] == "\r":
            end -= 1
        value = self.text[i:end].replace("\r", "")
        self.tokens.append(Token(value, i, end, self.line, self.line))
        return j

    def _quoted(self, i: int) -> int:
        out: list[str] = []
        j, line, escaped = i + 1, self.line, False
        while j < len(self.text):
            ch = self.text[j]
            j += 1
            if not escaped and ch == "\\":
                escaped = True
                continue
            if not escaped and ch == '"':
                break
            self.line += ch == "\n"
            out.append(ch if not escaped or ch == '"' else "\\" + ch)
            escaped = False
        else:
            raise CorefileError(line, "unterminated quoted string")
        self.tokens.append(Token("".join(out), i, j, line, self.line, quoted=True))
        return j


def lex(text: str) -> tuple[list[Token], list[Comment]]:
    """The tokens and comments of ``text``, in order."""
    return _Lexer(text).run()


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
    name = name.strip().lower().rstrip(".")
    return f"{name}." if name else "."


class _Parser:
    def __init__(self, text: str, tokens: list[Token], comments: list[Comment]) -> None:
        self.text = text
        self.tokens = tokens
        self.markers = {c.line: c for c in comments if c.first_on_line}
        self.i = 0
        self.blocks: list[Block] = []
        self.imports: list[Import] = []

    def run(self) -> None:
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            if tok.is_close or tok.is_open:
                raise CorefileError(tok.line, f"unexpected '{tok.text}' at the top level")
            if tok.text == "import":
                self._import()
            else:
                self._block()

    def _same_line(self, index: int) -> bool:
        return 0 < index < len(self.tokens) and \
            self.tokens[index - 1].end_line == self.tokens[index].line

    def _import(self) -> None:
        line = self.tokens[self.i].line
        self.i += 1
        args: list[str] = []
        while self._same_line(self.i):
            args.append(self.tokens[self.i].text)
            self.i += 1
        self.imports.append(Import(tuple(args), line))

    def _keys(self) -> list[Token]:
        keys = [self.tokens[self.i]]
        self.i += 1
        while self.i < len(self.tokens) and not self.tokens[self.i].is_open and (
                self._same_line(self.i) or keys[-1].text.endswith(",")):
            keys.append(self.tokens[self.i])
            self.i += 1
        return keys

    def _block(self) -> None:
        keys = self._keys()
        first = keys[0]
        snippet = len(keys) == 1 and first.text.startswith("(") and first.text.endswith(")")
        braced = self.i < len(self.tokens) and self.tokens[self.i].is_open
        if braced:
            end, binds = self._body(first.line)
        elif self.blocks or snippet:
            raise CorefileError(first.line, f"expected '{{' after {first.text!r}")
        else:
            end, binds = self._unbraced(keys[-1].end)
        marker, marker_start = self._marker(first)
        self.blocks.append(Block(tuple(k.text for k in keys), first.start, end, first.line,
                                 binds, snippet, marker, marker_start, braced))

    def _body(self, line: int) -> tuple[int, tuple[str, ...]]:
        """From the block's ``{`` to its ``}``; a directive starts a line or the body."""
        depth, binds, opened = 0, list[str](), self.i
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            depth += tok.is_open - tok.is_close
            starts = self.i == opened + 1 or not self._same_line(self.i)
            if depth == 1 and tok.text == "bind" and starts:
                binds.extend(self._bind_args())
                continue
            self.i += 1
            if depth == 0 and not starts:
                raise CorefileError(tok.line, "unexpected '}': a block closes on its own line")
            if depth == 0:
                return tok.end, tuple(binds)
        raise CorefileError(line, "block is not closed (missing '}')")

    def _bind_args(self) -> list[str]:
        """``bind ADDR|IFACE ... [{ except ... }]``: the arguments on bind's own line."""
        self.i += 1
        args: list[str] = []
        while self._same_line(self.i) and not self.tokens[self.i].is_open:
            args.append(self.tokens[self.i].text)
            self.i += 1
        return args

    def _unbraced(self, end: int) -> tuple[int, tuple[str, ...]]:
        """A file's only block may omit braces: it runs to the end of the file."""
        binds: list[str] = []
        depth = 0
        while self.i < len(self.tokens):
            tok = self.tokens[self.i]
            depth += tok.is_open - tok.is_close
            if depth < 0:
                raise CorefileError(tok.line, "unexpected '}' (the block has no '{')")
            if depth == 0 and tok.text == "bind" and not self._same_line(self.i):
                binds.extend(self._bind_args())
                continue
            end = tok.end
            self.i += 1
        return end, tuple(binds)

    def _marker(self, first: Token) -> tuple[str | None, int | None]:
        comment = self.markers.get(first.line - 1)
        if comment is None or first.start != self.text.rfind("\n", 0, first.start) + 1:
            return None, None
        owner = marker_owner(comment.text.rstrip("\r"))
        if owner is None:
            return None, None
        return owner, self.text.rfind("\n", 0, comment.start) + 1


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
    text = data.decode("utf-8", "surrogateescape")
    tokens, comments = lex(text)
    parser = _Parser(text, tokens, comments)
    parser.run()
    to_byte = _byte_offsets(text)
    blocks = tuple(_in_bytes(b, to_byte) for b in parser.blocks)
    return Corefile(data, blocks, tuple(parser.imports))


def _byte_offsets(text: str) -> list[int] | None:
    """Character offset -> byte offset (None when they are the same: ASCII)."""
    if text.isascii():
        return None
    offsets, total = [0], 0
    for ch in text:
        total += len(ch.encode("utf-8", "surrogateescape"))
        offsets.append(total)
    return offsets


def _in_bytes(block: Block, to_byte: list[int] | None) -> Block:
    if to_byte is None:
        return block
    marker = None if block.marker_start is None else to_byte[block.marker_start]
    return Block(block.keys, to_byte[block.start], to_byte[block.end], block.line, block.binds,
                 block.snippet, block.marker, marker, block.braced)


# --- editing -----------------------------------------------------------------------


def owned_text(owner: str, block: str) -> bytes:
    """The marker line and ``block`` (which ends with its closing brace, no newline)."""
    return f"{MARKER}{owner}\n{block}".encode()


def insert(data: bytes, owned: bytes) -> bytes:
    """Append ``owned`` after a blank line; :func:`remove` undoes it exactly."""
    if not data:
        return owned + b"\n"
    if data.endswith(b"\n"):
        return data + b"\n" + owned + b"\n"
    return data + b"\n\n" + owned


def replace(data: bytes, block: Block, owned: bytes) -> bytes:
    """Put ``owned`` where the owned ``block`` and its marker line are."""
    start = block.start if block.marker_start is None else block.marker_start
    return data[:start] + owned + data[block.end:]


def remove(data: bytes, block: Block) -> bytes:
    """Remove the owned ``block``, its marker line and the blank line :func:`insert` added."""
    start = block.start if block.marker_start is None else block.marker_start
    end = block.end
    if data[end:end + 1] == b"\n":
        end += 1
        if start >= 2 and data[start - 2:start] == b"\n\n":
            start -= 1
    elif data[start - 2:start] == b"\n\n" and start >= 2:
        start -= 2
    return data[:start] + data[end:]
